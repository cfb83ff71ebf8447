//! `switchyard serve`: the gateway, its admin API and the background work,
//! from start to a drained shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use switchyard::pipeline::Gateway;
use switchyard::{demo, server};

use crate::load;

pub(crate) async fn serve(path: &Path, listen: Option<SocketAddr>) -> Result<(), String> {
    // Loading reads files and compiles plugins: on a blocking thread, as the
    // runtime may have only the one thread this task runs on.
    let owned = path.to_path_buf();
    let (config, registry, warnings) = tokio::task::spawn_blocking(move || load(&owned))
        .await
        .map_err(|e| format!("loading the config failed: {e}"))??;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if let Some(demo) = &config.demo_upstream {
        let addr: SocketAddr = demo
            .listen
            .parse()
            .map_err(|e| format!("demo_upstream.listen: {e}"))?;
        let listener = demo::bind(addr).await?;
        tracing::info!(%addr, "demo upstream listening");
        tokio::spawn(async move {
            if let Err(e) = demo::serve(listener).await {
                tracing::error!("demo upstream stopped: {e}");
            }
        });
    }
    let _watcher = registry.watch().map_err(|e| {
        format!(
            "cannot watch plugin folder {}: {e}",
            config.plugins.dir.display()
        )
    })?;
    let gateway = Gateway::new(&config, registry)?;
    let store = config.store.enabled.then(|| {
        let retention = (config.store.retention_days > 0).then(|| {
            std::time::Duration::from_secs(u64::from(config.store.retention_days) * 86_400)
        });
        tracing::info!(path = %config.store.path.display(), "recording requests in the store");
        switchyard::store::Store::open_with(&config.store.path, retention)
    });
    let sinks = Arc::new(switchyard::pipeline::Sinks {
        store: store.clone(),
        monitor: switchyard::monitor::Monitor::new(config.monitor),
        budgets: Default::default(),
        metrics: Default::default(),
        // Its entries on disk are read once the store is migrated.
        cache: Some(switchyard::cache::Cache::new(
            &config.cache,
            store
                .as_ref()
                .filter(|s| s.flush(std::time::Duration::from_secs(5)))
                .map(|s| s.path()),
        )),
    });
    sinks.budgets.set(config.budgets.clone());
    sinks.budgets.share_through(gateway.shared());
    if let Some(store) = &store {
        // Spend of the current windows, so a restart resets no budget.
        sinks.budgets.restore_from(store, &config.budgets, None);
    }
    let live = switchyard::live::Live::new(gateway, path, sinks);
    // Without a watch (e.g. the host's inotify limit is reached) the gateway
    // still serves, and reloads on SIGHUP and /admin/reload.
    let _config_watcher = live.watch().unwrap_or_else(|e| {
        tracing::warn!(
            "cannot watch the config file {} ({e}): reload it with SIGHUP or POST /admin/reload",
            path.display()
        );
        None
    });
    live.reload_on_sighup();
    survive_file_size_limit();
    let store_handle = store.clone();
    serve_admin(&config, live.clone(), store).await?;
    let app = server::router(live, config.server.max_body_bytes)
        .into_make_service_with_connect_info::<SocketAddr>();
    let addr = match listen {
        Some(a) => a,
        None => config.listen.parse().map_err(|e| format!("listen: {e}"))?,
    };
    let listener =
        switchyard::server::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // Handled before anyone is told the gateway listens.
    let signalled = shutdown();
    tracing::info!(
        threads = config.server.serving_threads(),
        listen = %local,
        "switchyard listening"
    );
    if config.admin.metrics_on_api && config.admin.token_env.is_none() && !local.ip().is_loopback()
    {
        tracing::warn!(
            "admin.metrics_on_api serves /metrics on {local} without a token (set admin.token_env): anyone who can reach it can read the metrics"
        );
    }
    match (config.auth.required, local.ip().is_loopback()) {
        (true, _) => tracing::info!(
            keys = config.auth.keys.len(),
            "client keys required (auth.required): requests without a valid key get 401"
        ),
        (false, true) => tracing::info!(
            "client keys are not required (auth.required is false): any local process may spend the configured upstream keys"
        ),
        (false, false) => tracing::warn!(
            "client keys are not required (auth.required is false) on {local}: anyone who can reach it may spend the configured upstream keys"
        ),
    }
    // On SIGTERM/ctrl-c: stop accepting, let requests in flight finish, but
    // no longer than DRAIN (a long stream must not block a deploy forever).
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    if let Err(e) =
        switchyard::busy_poll::start(std::time::Duration::from_micros(config.server.busy_poll_us))
    {
        tracing::warn!("{e}");
    }
    // The accept loop is a task of its own: on a work-stealing runtime it
    // then runs on a worker, which takes each new connection's task itself
    // instead of being woken by the main thread (`block_on`) to take it.
    let server = tokio::spawn(
        axum::serve(switchyard::server::nodelay(listener), app)
            .with_graceful_shutdown(async move {
                signalled.await;
                let _ = stopping_tx.send(true);
            })
            .into_future(),
    );
    let result = tokio::select! {
        served = server => match served {
            Ok(served) => served.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the server stopped: {e}")),
        },
        () = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!("requests still in flight after {} s; exiting", DRAIN.as_secs());
            Ok(())
        }
    };
    // What the writer still gathers is committed before the process ends.
    if let Some(store) = store_handle
        && !tokio::task::spawn_blocking(move || store.flush(std::time::Duration::from_secs(5)))
            .await
            .unwrap_or(false)
    {
        tracing::warn!("the store could not commit its last records before exit");
    }
    result
}

/// A write past the process's file-size limit (`ulimit -f`) raises SIGXFSZ,
/// whose default action ends the process. Handled, the write fails with
/// EFBIG instead, which the store treats as a full disk (degraded, retried)
/// while requests go on.
fn survive_file_size_limit() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    let mut last: Option<std::time::Instant> = None;
                    while s.recv().await.is_some() {
                        if last.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
                            last = Some(std::time::Instant::now());
                            tracing::warn!("a write went past the file-size limit (SIGXFSZ)");
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot handle SIGXFSZ: {e}"),
        }
    }
}

/// Starts the admin API on its own listener.
async fn serve_admin(
    config: &switchyard::config::Config,
    live: Arc<switchyard::live::Live>,
    store: Option<switchyard::store::Store>,
) -> Result<(), String> {
    let token = match &config.admin.token_env {
        None => None,
        Some(var) => Some(config.env.get(var).filter(|t| !t.is_empty()).ok_or_else(|| {
            format!("admin.token_env names {var}, which is not set (or empty): set it, or remove admin.token_env")
        })?),
    };
    let addr = switchyard::admin::address(&config.admin.listen, token.is_some())?;
    let listener = switchyard::server::listen(addr)
        .map_err(|e| format!("cannot listen on {addr} (admin.listen): {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(listen = %local, "admin API listening");
    switchyard::admin::tidy_plugin_dir(&config.plugins.dir);
    let app = switchyard::admin::router(Arc::new(switchyard::admin::AdminState {
        live,
        store,
        token,
    }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("admin API stopped: {e}");
        }
    });
    Ok(())
}

/// How long a shutdown waits for requests in flight.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

fn shutdown() -> impl std::future::Future<Output = ()> {
    // SIGTERM is handled from here on, not from the future's first poll
    // (the server's task may start a moment after the listening line).
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match term {
            Some(mut term) => tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            },
            None => ctrl_c.await.unwrap_or(()),
        }
        #[cfg(not(unix))]
        ctrl_c.await.unwrap_or(());
        tracing::info!("shutting down; finishing requests in flight");
    }
}
