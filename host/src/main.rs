//! The `switchyard` command: `serve`, `check` and `demo-upstream`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod cli;

/// mimalloc instead of glibc's allocator: a request allocates and frees
/// hundreds of small blocks across hyper, serde and wasmtime, and glibc's
/// bins and consolidation cost the gateway more of its CPU per request.
/// Built without its transparent-huge-page advice (`no_thp`): with it, the
/// kernel backs the allocator's arenas with 2 MiB pages, and the gateway's
/// resident memory at start went from 32 to 53 MiB (79 MiB at peak).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cli::commands::{check, keys, plugins_command};
use cli::serve::serve;
use switchyard::config::{Config, ServerConfig};
use switchyard::demo;
use switchyard::plugins::{Registry, RegistrySettings};

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
        /// Until when (same forms); now when absent.
        #[arg(long)]
        until: Option<String>,
        /// Only this route's requests.
        #[arg(long)]
        route: Option<String>,
        /// Only attempts on this deployment (and the requests that made them).
        #[arg(long)]
        deployment: Option<String>,
        /// Only this caller's requests (a client key's name).
        #[arg(long)]
        caller: Option<String>,
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
        /// Milliseconds between a streamed answer's events (0: all at
        /// once). Paced, each event reaches the gateway in a read of its
        /// own, as a model's tokens do.
        #[arg(long, default_value_t = 0)]
        event_gap_ms: u64,
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

/// The runtime requests are served on (`threads`: `server.threads`, or the
/// cores the process may use; None for commands other than `serve`, which
/// keep tokio's defaults).
///
/// Tasks a task wakes run in the order they were woken, not the last one
/// first: tokio's LIFO slot runs the task just woken ahead of all others,
/// which at 64 connections cost ~1.4× the CPU a request (`scripts/ab`, one
/// core: 101–116 µs with it, 68–76 without, 65 on a single-threaded
/// scheduler). One thread gets the single-threaded scheduler, which has no
/// such slot and nothing to steal; more get a work-stealing runtime with the
/// slot turned off (an unstable tokio API: `.cargo/config.toml` builds with
/// `--cfg tokio_unstable`).
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            #[cfg(tokio_unstable)]
            b.disable_lifo_slot();
            #[cfg(not(tokio_unstable))]
            eprintln!(
                "warning: built without --cfg tokio_unstable (set RUSTFLAGS replaces .cargo/config.toml's flags): tasks woken last run first, ~1/3 more CPU a request"
            );
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
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
    // The runtime's threads and the traces (set up with the subscriber) need
    // the config first: read here for `serve` (its errors are reported by the
    // real load below).
    let early = match &cli.command {
        Command::Serve { config, .. } => Config::load(config).ok(),
        _ => None,
    };
    // The echo upstream of load tests serves as the gateway does, so that
    // the ratios to it compare like with like.
    let threads = match &cli.command {
        Command::DemoUpstream { .. } => Some(ServerConfig::default().serving_threads()),
        _ => early.as_ref().map(|c| c.server.serving_threads()),
    };
    let runtime = match runtime(threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let otlp = early.and_then(|c| c.telemetry.otlp);
    let flush_traces_on_exit = match init_tracing(log_writer, otlp.as_ref(), runtime.handle()) {
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
            until,
            route,
            deployment,
            caller,
            by,
            json,
        } => Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                let filter = switchyard::store::query::Filter {
                    since: Some(since),
                    until,
                    route,
                    deployment,
                    caller,
                    group_by: Some(by),
                    ..Default::default()
                };
                switchyard::stats::report(&c.store.path, &c.budgets, &filter, json)
            })
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
        Command::DemoUpstream {
            listen,
            event_gap_ms,
        } => runtime.block_on(async move {
            let listener = demo::bind(listen).await?;
            tracing::info!(%listen, event_gap_ms, "demo upstream listening");
            let gap = std::time::Duration::from_millis(event_gap_ms);
            demo::serve_paced(listener, gap)
                .await
                .map_err(|e| e.to_string())
        }),
    };
    // The last spans are exported by tasks on the runtime, which a
    // single-threaded runtime runs only while something drives it: wait for
    // the flush from a blocking thread inside it.
    if let Some(guard) = flush_traces_on_exit {
        runtime.block_on(async move {
            let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
        });
    }
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
