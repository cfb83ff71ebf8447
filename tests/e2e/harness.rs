//! Starts the real `switchyard` binary with a config and plugin folder of the
//! test's own, and collects its log lines for assertions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The repository root (this file is in tests/e2e/).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A compiled plugin: bundled ones in plugins/, test-only ones in tests/plugins/.
pub fn plugin(name: &str) -> PathBuf {
    // A path inside the repository (e.g. `examples/js/cheapest-strategy`).
    if name.contains('/') {
        let path = repo().join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "{} is not built: run scripts/setup",
            path.display()
        );
        return path;
    }
    for dir in ["plugins", "tests/plugins", "tests/fixtures/v0.1"] {
        let path = repo().join(dir).join(format!("{name}.wasm"));
        if path.exists() {
            return path;
        }
    }
    panic!("plugin {name}.wasm is not built: run scripts/build-plugins");
}

/// A deployment entry of the config.
pub fn deployment(name: &str, base_url: &str, model: &str) -> Value {
    json!({"name": name, "adapter": "openai", "base_url": base_url, "model": model})
}

/// A running gateway. Killed on drop.
pub struct Gateway {
    child: Child,
    pub url: String,
    /// The admin API (its own listener).
    pub admin_url: String,
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    /// Dropped after `child` (fields drop in order): the gateway is gone
    /// before a test that waits to run alone starts.
    _share: crate::solo::Share,
}

impl Gateway {
    /// Starts `switchyard serve` with these routes (and optional extra
    /// top-level config), a plugin folder holding copies of `plugins`
    /// (copied under the same id), and short timeouts suited to tests.
    pub fn start(routes: Value, plugins: &[&str], extra: Value) -> Gateway {
        Self::start_with_ids(
            routes,
            &plugins.iter().map(|p| (*p, *p)).collect::<Vec<_>>(),
            extra,
        )
    }

    /// Like [`start`](Self::start), with `(id, plugin)` pairs: the plugin
    /// `plugin` is installed as `<id>.wasm`.
    pub fn start_with_ids(routes: Value, plugins: &[(&str, &str)], extra: Value) -> Gateway {
        Self::start_with_env(routes, plugins, extra, &[])
    }

    /// Like [`start_with_ids`](Self::start_with_ids), with extra environment
    /// variables for the gateway (API keys).
    pub fn start_with_env(
        routes: Value,
        plugins: &[(&str, &str)],
        extra: Value,
        env: &[(&str, &str)],
    ) -> Gateway {
        let share = crate::solo::share();
        let dir = tempfile::tempdir().unwrap();
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir(&plugin_dir).unwrap();
        for (id, name) in plugins {
            std::fs::copy(plugin(name), plugin_dir.join(format!("{id}.wasm"))).unwrap();
        }
        let mut config = json!({
            "listen": "127.0.0.1:0",
            "admin": {"listen": "127.0.0.1:0"},
            "timeouts": {"connect_ms": 1000, "first_byte_ms": 2000, "idle_ms": 2000, "total_ms": 5000},
            "plugins": {
                "dir": plugin_dir,
                // Shared by all tests: entries are written by rename, so
                // concurrent gateways can share it; compiling once saves time.
                "cache_dir": repo().join("target/e2e-plugin-cache"),
            },
            "routes": routes,
        });
        // SWITCHYARD_TEST_THREADS=N runs every gateway with N serving threads
        // (a test's own `server.threads` wins), to try the suite on one.
        if let Ok(n) = std::env::var("SWITCHYARD_TEST_THREADS") {
            let n: usize = n.parse().expect("SWITCHYARD_TEST_THREADS is a number");
            config["server"] = json!({"threads": n});
        }
        merge(&mut config, extra);
        // Failover tests see each failure move on at once: routes retry
        // the same deployment only where a test says so (`retry`).
        if let Some(routes) = config["routes"].as_object_mut() {
            for route in routes.values_mut() {
                if let Some(r) = route.as_object_mut()
                    && !r.contains_key("retry")
                {
                    r.insert(
                        "retry".into(),
                        json!({"retries": 0, "max_retry_after_ms": 0}),
                    );
                }
            }
        }
        let config_path = dir.path().join("switchyard.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        let (child, logs) = spawn(&config_path, env);
        let mut gateway = Gateway {
            child,
            url: String::new(),
            admin_url: String::new(),
            dir,
            logs,
            _share: share,
        };
        gateway.wait_listening();
        gateway
    }

    /// Kills the gateway (as `kill -9` would) and starts it again on the
    /// same config, store and plugin folder.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, logs) = spawn(&self.config_path(), &[]);
        self.child = child;
        self.logs = logs;
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let gateway = self;
        // Plugins are compiled before the gateway listens: with a cold compile
        // cache, a Python or JavaScript component takes ~5-10 s of a core, and
        // a route may load several while other tests run beside it on a
        // 2-core machine. Only a start that hangs waits this long.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(addr) = gateway
                .log_lines()
                .iter()
                .find(|l| l.contains("switchyard listening"))
                .and_then(|l| l.split("listen=").nth(1))
            {
                gateway.url = format!("http://{}", addr.trim());
                // Logged before the API's line.
                if let Some(admin) = gateway
                    .log_lines()
                    .iter()
                    .find(|l| l.contains("admin API listening"))
                    .and_then(|l| l.split("listen=").nth(1))
                {
                    gateway.admin_url = format!("http://{}", admin.trim());
                }
                return;
            }
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!("switchyard exited with {status}:\n{}", gateway.logs());
            }
            assert!(
                Instant::now() < deadline,
                "switchyard did not start:\n{}",
                gateway.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the gateway as a service manager would (SIGTERM) and waits for
    /// it to exit: a drained shutdown, the store's last records committed.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "switchyard did not exit after SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The gateway's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.json")
    }

    /// Rewrites the config file in place with `change` applied (the gateway
    /// watches it).
    pub fn rewrite_config(&self, change: impl FnOnce(&mut Value)) {
        let path = self.config_path();
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        change(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    /// The gateway's plugin folder.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn logs(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Waits until a log line contains `needle`. Log lines are written by a
    /// background thread, so they may trail the response a little.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until at least `count` log lines contain `needle`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .log_lines()
                .iter()
                .filter(|l| l.contains(needle))
                .count()
                >= count
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that a log line contains `needle` (waiting up to 3 s for it).
    pub fn assert_log(&self, needle: &str) {
        assert!(
            self.wait_for_log(needle, Duration::from_secs(3)),
            "no log line contains {needle:?}:\n{}",
            self.logs()
        );
    }

    /// `GET` on the admin API (`path` from `/admin/...`): status and JSON.
    pub async fn admin(&self, path: &str) -> (u16, Value) {
        let r = client()
            .get(format!("{}{path}", self.admin_url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The store's database file (the default path beside the config).
    /// The admin listener's `GET /metrics`, as text.
    pub async fn metrics_text(&self) -> String {
        let r = client()
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join(".switchyard/switchyard.db")
    }

    /// The `/healthz` document.
    pub async fn health(&self) -> Value {
        let r = client()
            .get(format!("{}/healthz", self.url))
            .send()
            .await
            .unwrap();
        json_body(r).await
    }

    /// POSTs a chat request for `model` with one user message.
    pub async fn chat(&self, model: &str, stream: bool) -> reqwest::Response {
        self.post(json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "hello"}],
        }))
        .await
    }

    pub async fn post(&self, body: Value) -> reqwest::Response {
        client()
            .post(format!("{}/v1/chat/completions", self.url))
            .body(body.to_string())
            .send()
            .await
            .expect("gateway answers")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchyard serve` on `config_path`, its log lines gathered as they come.
fn spawn(config_path: &std::path::Path, env: &[(&str, &str)]) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(config_path)
        // SWITCHYARD_TEST_LOG raises the gateway's log level to debug a test.
        .env(
            "RUST_LOG",
            std::env::var("SWITCHYARD_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (child, logs)
}

/// A client whose own timeout only guards against a hung test.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A response's JSON body.
pub async fn json_body(r: reqwest::Response) -> Value {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The `data:` payloads of an SSE body, in order.
pub async fn sse_events(r: reqwest::Response) -> Vec<String> {
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Checks that a stream's events end with `[DONE]`.
pub fn assert_done(events: &[String]) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
}

/// An upstream speaking raw TCP on loopback: each connection it accepts is
/// handed to `serve`, in a task of its own. Returns its base URL
/// (`http://…/v1`) and a count of the connections it accepted.
pub async fn raw_upstream<F, Fut>(serve: F) -> (String, Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(serve(socket));
        }
    });
    (url, accepted)
}

/// A loopback port with nothing listening on it.
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        for (k, v) in extra {
            match (into.get_mut(&k), v) {
                (Some(existing @ Value::Object(_)), v @ Value::Object(_)) => merge(existing, v),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
}
