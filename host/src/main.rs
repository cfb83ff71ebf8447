//! The `switchyard` command: `serve`, `check` and `demo-upstream`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use switchyard::config::Config;
use switchyard::pipeline::Gateway;
use switchyard::plugins::{Registry, RegistrySettings};
use switchyard::{demo, server};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An LLM gateway with WebAssembly routing, adapters and evaluators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API.
    Serve {
        /// The config file (JSON, see config/schema.json).
        #[arg(long, default_value = "config/switchyard.json")]
        config: PathBuf,
        /// Listen address; overrides the config's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config and the plugins it names, then exit.
    Check {
        #[arg(long, default_value = "config/switchyard.json")]
        config: PathBuf,
    },
    /// Requests, usage, costs, failures and events from the store (works
    /// while the gateway runs).
    Stats {
        #[arg(long, default_value = "config/switchyard.json")]
        config: PathBuf,
        /// From when: a span back from now (90m, 24h, 7d) or milliseconds
        /// since the epoch.
        #[arg(long, default_value = "24h")]
        since: String,
        /// Group costs by day, route, deployment or caller.
        #[arg(long, default_value = "day", value_parser = ["day", "route", "deployment", "caller"])]
        by: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// A strategy over the requests the store recorded: how its choices
    /// would have differed from the live ones (agreement, what-if cost and
    /// latency per deployment), before it routes a single live request.
    Replay {
        #[arg(long, default_value = "config/switchyard.json")]
        config: PathBuf,
        /// The strategy plugin (.wasm) to try; its config block is
        /// `plugins.config.<file name>` if the config has one.
        #[arg(long)]
        strategy: PathBuf,
        /// Only this route's requests.
        #[arg(long)]
        route: Option<String>,
        /// From when: a span back from now (90m, 24h, 7d) or milliseconds
        /// since the epoch.
        #[arg(long, default_value = "24h")]
        since: String,
        /// Until when (same forms); now when absent.
        #[arg(long)]
        until: Option<String>,
        /// Requests replayed at most, the oldest first.
        #[arg(long, default_value_t = 100_000)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run only the built-in OpenAI-compatible echo upstream.
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
    },
    /// Plugin operations: list, check one file, start a new one.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Client keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Prints a new client key once, and the hash to put in the config's
    /// `auth.keys.<name>.hash` (the key itself is stored nowhere).
    New {
        /// The key's name (the caller's identity in records and budgets).
        #[arg(long, default_value = "my-app")]
        name: String,
    },
    /// Prints the hash of an existing key (read from standard input).
    Hash,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Every plugin of the config's folder: id, kind, WIT version, name,
    /// version, hash, state (active, quarantined as the running gateway
    /// reports it, or rejected with the reason).
    List {
        #[arg(long, default_value = "config/switchyard.json")]
        config: PathBuf,
    },
    /// What one plugin file is (kind, WIT version, imports) and whether the
    /// gateway would load it, and why not. Exit status 1 when it would not.
    Check { file: PathBuf },
    /// A buildable skeleton of a new plugin in ./NAME (or --dir).
    New {
        #[arg(long)]
        kind: String,
        #[arg(long, value_parser = ["rust", "python", "js"])]
        lang: String,
        name: String,
        /// Where to create the plugin's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The templates folder (default: the checkout's templates/).
        #[arg(long)]
        templates: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Log lines are gathered in memory and written in batches by one thread
    // (logging.rs): no system call and no wake-up per line on the request path.
    let (log_writer, _flush_logs_on_exit) = match switchyard::logging::batched(std::io::stderr()) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("error: cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Traces are set up with the subscriber, so they need the config first:
    // read here for `serve` (its errors are reported by the real load below).
    let otlp = match &cli.command {
        Command::Serve { config, .. } => Config::load(config).ok().and_then(|c| c.telemetry.otlp),
        _ => None,
    };
    let _flush_traces_on_exit = match init_tracing(log_writer, otlp.as_ref(), runtime.handle()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve { config, listen } => runtime.block_on(serve(&config, listen)),
        Command::Check { config } => check(&config),
        Command::Keys { command } => keys(command),
        Command::Stats {
            config,
            since,
            by,
            json,
        } => Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|c| switchyard::stats::report(&c.store.path, &c.budgets, &since, &by, json))
            .map(|text| {
                use std::io::Write;
                let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
            }),
        Command::Replay {
            config,
            strategy,
            route,
            since,
            until,
            limit,
            json,
        } => Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                let options = switchyard::shadow::replay::Options {
                    strategy: &strategy,
                    route: route.as_deref(),
                    since: &since,
                    until: until.as_deref(),
                    limit,
                    json,
                };
                runtime.block_on(switchyard::shadow::replay::run(&c, &options))
            })
            .map(|text| {
                use std::io::Write;
                let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
            }),
        Command::Plugins { command } => plugins_command(command, &runtime),
        Command::DemoUpstream { listen } => runtime.block_on(async move {
            let listener = demo::bind(listen).await?;
            tracing::info!(%listen, "demo upstream listening");
            demo::serve(listener).await.map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The log output (stderr, batched; `RUST_LOG`, default `info`) and, with
/// `telemetry.otlp`, the trace exporter beside it. Each sees only its own
/// spans: the exported ones never reach the log lines, the log's never the
/// collector (warnings and errors inside an exported span become its events).
fn init_tracing(
    log: switchyard::logging::BatchedLog,
    otlp: Option<&switchyard::telemetry::OtlpConfig>,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<switchyard::telemetry::TelemetryGuard>, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let off = format!("{}=off", switchyard::telemetry::TARGET);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive(off.parse().map_err(|e| format!("{off}: {e}"))?);
    let fmt = tracing_subscriber::fmt::layer()
        .event_format(switchyard::logging::line::Line::default())
        .with_writer(log)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(fmt);
    let Some(otlp) = otlp else {
        registry.init();
        return Ok(None);
    };
    let (layer, guard) = switchyard::telemetry::start(otlp, runtime.clone())?;
    let exported = tracing_subscriber::filter::filter_fn(|meta| {
        if meta.is_span() {
            meta.target() == switchyard::telemetry::TARGET
        } else {
            *meta.level() <= tracing::Level::WARN
        }
    });
    registry.with(layer.with_filter(exported)).init();
    tracing::info!(endpoint = %otlp.shown_url(), "exporting traces (telemetry.otlp)");
    Ok(Some(guard))
}

/// Loads the config and plugins; returns warnings about what the config
/// names but the plugin folder lacks.
fn load(path: &Path) -> Result<(Config, Arc<Registry>, Vec<String>), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let settings = RegistrySettings::from(&config);
    let registry = Registry::new(settings).map_err(|e| e.to_string())?;
    let warnings = switchyard::ops::config_warnings(&config, &registry);
    Ok((config, registry, warnings))
}

async fn serve(path: &Path, listen: Option<SocketAddr>) -> Result<(), String> {
    let (config, registry, warnings) = tokio::task::block_in_place(|| load(path))?;
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
        store.flush(std::time::Duration::from_secs(5));
        if let Ok(conn) = switchyard::store::query::open(store.path()) {
            sinks
                .budgets
                .restore(switchyard::pipeline::outcome::now_ms(), |name, b, from| {
                    switchyard::store::query::budget_spend(&conn, b, from).unwrap_or_else(|e| {
                        tracing::warn!(budget = name, "cannot read the budget's spend back: {e}");
                        0.0
                    })
                });
        }
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
    tracing::info!(listen = %local, "switchyard listening");
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
    let server = axum::serve(switchyard::server::nodelay(listener), app).with_graceful_shutdown(
        async move {
            shutdown().await;
            let _ = stopping_tx.send(true);
        },
    );
    let result = tokio::select! {
        served = server => served.map_err(|e| e.to_string()),
        () = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!("requests still in flight after {} s; exiting", DRAIN.as_secs());
            Ok(())
        }
    };
    // What the writer still gathers is committed before the process ends.
    if let Some(store) = &store_handle
        && !tokio::task::block_in_place(|| store.flush(std::time::Duration::from_secs(5)))
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

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
    tracing::info!("shutting down; finishing requests in flight");
}

fn plugins_command(
    command: PluginsCommand,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let text = match command {
        PluginsCommand::List { config } => {
            let (config, registry, _) = load(&config)?;
            let mut rows = switchyard::ops::rows(&registry);
            let mut text = String::new();
            match runtime.block_on(switchyard::ops::live_detail(&config)) {
                Some(detail) => {
                    switchyard::ops::apply_live(&mut rows, &detail);
                    text.push_str(&format!(
                        "(live states from the gateway at {})\n",
                        config.listen
                    ));
                }
                None => text.push_str(
                    "(no gateway answers at the config's listen address: states as loaded now)\n",
                ),
            }
            text.push_str(&switchyard::ops::table(&rows));
            text
        }
        PluginsCommand::Check { file } => match switchyard::ops::check_file(&file) {
            Ok(report) => report,
            Err(report) => {
                let _ = out.write_all(report.as_bytes());
                return Err(format!("{} would not load", file.display()));
            }
        },
        PluginsCommand::New {
            kind,
            lang,
            name,
            dir,
            templates,
        } => {
            let kind = switchyard::domain::Kind::parse(&kind)
                .ok_or_else(|| format!("--kind {kind:?}: one of adapter, strategy, evaluator"))?;
            let templates = templates.unwrap_or_else(switchyard::ops::default_templates);
            let made = switchyard::ops::new_plugin(&templates, kind, &lang, &name, &dir)?;
            format!(
                "created {} ({lang} {kind}); build it as its README says and copy the .wasm into the gateway's plugins folder\n",
                made.display()
            )
        }
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

/// `switchyard check`: a report on stderr, a non-zero exit for an invalid config.
fn check(path: &Path) -> Result<(), String> {
    let (config, registry, warnings) = load(path)?;
    let mut report = format!("config {} is valid\n", path.display());
    report.push_str(&format!("plugins in {}:\n", config.plugins.dir.display()));
    for p in registry.loaded() {
        report.push_str(&format!(
            "  {:<16} {:<9} wit {} {} {} ({})\n",
            p.id,
            p.kind.to_string(),
            p.wit,
            p.metadata().name,
            p.metadata().version,
            &p.hash[..12]
        ));
    }
    for (id, reason) in registry.rejected() {
        report.push_str(&format!("  {id:<16} REJECTED: {reason}\n"));
    }
    report.push_str(&switchyard::ops::route_table(&config));
    for w in &warnings {
        report.push_str(&format!("warning: {w}\n"));
    }
    report.push_str(&format!("{} warning(s)\n", warnings.len()));
    eprint!("{report}");
    Ok(())
}

fn keys(command: KeysCommand) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut out = std::io::stdout().lock();
    let text = match command {
        KeysCommand::New { name } => {
            let key = switchyard::auth::new_key()?;
            let hash = switchyard::auth::hash_text(&key);
            let entry = serde_json::json!({ &name: { "hash": hash } });
            format!(
                "key:  {key}\nhash: {hash}\n\nThe key is shown once: give it to the caller. Put the hash in the config:\n\"auth\": {{ \"keys\": {entry} }}\n"
            )
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::stdin()
                .read_to_string(&mut key)
                .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
            format!("{}\n", switchyard::auth::hash_text(key.trim()))
        }
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}
