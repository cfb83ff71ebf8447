//! Limits shared through Redis: two gateway processes behind one Redis hold
//! a deployment's rps between them (counted at the mock), and a Redis that
//! is killed mid-run and restarted fails no request: each replica falls
//! back to its share (logged once) and shares again once Redis is back.
//!
//! Each test starts its own `redis-server` (from Debian's package, which
//! `scripts/setup` installs) on a free loopback port, without persistence,
//! and stops it by its PID.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, client};
use crate::mock::Mock;

/// A private redis-server, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            child: None,
            port,
            _dir: tempfile::tempdir().unwrap(),
        };
        r.restart();
        r
    }

    /// (Re)starts it on its port and waits until it answers PING.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING") != "+PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `INFO <section>`'s `field` (e.g. `cmdstat_evalsha`), whole.
    fn info(&self, section: &str, field: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = s.write_all(format!("INFO {section}\r\n").as_bytes());
        // A bulk reply: `$<length>\r\n<text>\r\n`.
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let whole = |raw: &[u8]| {
            let text = String::from_utf8_lossy(raw);
            let Some((head, body)) = text.split_once("\r\n") else {
                return false;
            };
            head.trim_start_matches('$')
                .parse::<usize>()
                .is_ok_and(|len| body.len() >= len)
        };
        while !whole(&raw) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_default()
            .to_string()
    }

    /// How many times Redis ran `EVALSHA` since its stats were reset.
    fn evalsha_calls(&self) -> u64 {
        let stat = self.info("commandstats", "cmdstat_evalsha");
        stat.split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// One inline command's first reply line ("" when unreachable).
    fn command(&self, line: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(format!("{line}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two gateways on the same config (two replicas), each connected to
/// Redis.
fn replicas(routes: Value, plugins: &[&str], extra: Value) -> (Gateway, Gateway) {
    let a = Gateway::start(routes.clone(), plugins, extra.clone());
    let b = Gateway::start(routes, plugins, extra);
    for gw in [&a, &b] {
        assert!(
            gw.wait_for_log("connected to Redis", Duration::from_secs(10)),
            "{}",
            gw.logs()
        );
    }
    (a, b)
}

fn shared_config(mock: &Mock, redis: &Redis, rps: u64) -> (Value, Value) {
    let routes = json!({"r": {"deployments": ["d"]}});
    let extra = json!({
        "deployments": {"d": {"adapter": "openai", "base_url": mock.url, "model": "gpt-shared", "rps": rps}},
        "limits": {"backend": "redis", "replicas_hint": 2, "queue": {"max_wait_ms": 0}},
        "redis": {"url": redis.url(), "timeout_ms": 20}
    });
    (routes, extra)
}

/// Loops requests on `url` until `until`; counts by status.
async fn hammer(url: String, until: Instant) -> (u32, u32, Vec<u16>) {
    let client = client();
    let (mut ok, mut limited, mut other) = (0, 0, Vec::new());
    while Instant::now() < until {
        let r = client
            .post(format!("{url}/v1/chat/completions"))
            .body(r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            s => other.push(s),
        }
        let _ = r.bytes().await;
    }
    (ok, limited, other)
}

/// Acceptance: two gateway processes, 8 clients each, 3 s against a 20 rps
/// deployment whose windows live in one Redis: the mock sees 20 a second
/// in all (within 5 %), not 20 per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_hold_one_rps_limit() {
    let mock = Mock::start().await;
    let redis = Redis::start();
    let (routes, extra) = shared_config(&mock, &redis, 20);
    let (a, b) = replicas(routes, &["openai"], extra);
    // Each replica's first check connects to Redis (and loads its script):
    // done before the measured seconds, so a slow first round trip past
    // timeout_ms does not let a second through on the local share.
    for gw in [&a, &b] {
        assert_eq!(gw.chat("r", false).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = mock.hits("gpt-shared");
    let until = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for gw in [&a, &b] {
        for _ in 0..8 {
            tasks.push(tokio::spawn(hammer(gw.url.clone(), until)));
        }
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l, other) = t.await.unwrap();
        assert!(other.is_empty(), "statuses {other:?}");
        ok += o;
        limited += l;
    }
    let hits = mock.hits("gpt-shared") - before;
    assert_eq!(hits as u32, ok);
    assert!(
        (57..=63).contains(&hits),
        "{hits} upstream requests in 3 s at 20 rps shared by two replicas\n{}\n{}",
        a.logs(),
        b.logs()
    );
    assert!(limited > 100, "{limited} refused");
    assert!(!a.logs().contains("Redis unavailable") && !b.logs().contains("Redis unavailable"));
    // Limit events still fire once per window (each replica's own count).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, events) = a.admin("/admin/events?type=rate_limit_reached").await;
        let n = events["data"].as_array().map_or(0, Vec::len);
        if n >= 2 || Instant::now() > deadline {
            assert!((2..=5).contains(&n), "once per 1 s window: {events}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The windows are Redis hashes under the prefix.
    assert_eq!(redis.command("EXISTS switchyard:lim:d:d:rps"), ":1");
}

/// Redis killed mid-run and restarted: no request fails; the fall-back is
/// logged once; shared limits resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fails_no_request() {
    let mock = Mock::start().await;
    let mut redis = Redis::start();
    let (routes, extra) = shared_config(&mock, &redis, 100_000);
    let gw = Gateway::start(routes, &["openai"], extra);
    assert!(gw.wait_for_log("connected to Redis", Duration::from_secs(10)));
    let until = Instant::now() + Duration::from_millis(3_500);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(hammer(gw.url.clone(), until)));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.restart();
    let mut ok = 0;
    for t in tasks {
        let (o, l, other) = t.await.unwrap();
        assert_eq!((l, other), (0, vec![]), "no request failed or was refused");
        ok += o;
    }
    assert!(ok > 100, "{ok} answered");
    // Redis is asked again after its back-off (at most 2 s), on a request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.logs().contains("Redis is back: limits are shared again") {
        assert!(Instant::now() < deadline, "{}", gw.logs());
        assert_eq!(gw.chat("r", false).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gw.logs().matches("Redis unavailable").count(),
        1,
        "logged once: {}",
        gw.logs()
    );
    // Shared again: requests after the return write their window to Redis
    // (one may still time out on a machine busy with other tests: its
    // 20 ms are short).
    redis.command("FLUSHALL");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(gw.chat("r", false).await.status(), 200);
        if redis.command("EXISTS switchyard:lim:d:d:rps") == ":1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never shared again: {}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key's 429 and a tripped circuit seen by one replica sideline the key
/// and the deployment on the other too (the state rides on the same
/// round trip as the limits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cool_downs_seen_by_one_replica_hold_for_the_other() {
    let mock = Mock::start().await;
    let redis = Redis::start();
    let routes = json!({
        "k": {"deployments": ["pool"]},
        "c": {"deployments": ["bad", "good"]}
    });
    let extra = json!({
        "deployments": {
            "pool": {"adapter": "openai", "base_url": mock.url, "model": "gpt-pool",
                "api_key_env": ["KEY_SLOW", "KEY_OK"]},
            "bad": {"adapter": "openai", "base_url": mock.url, "model": "fail-500"},
            "good": {"adapter": "openai", "base_url": mock.url, "model": "gpt-good", "priority": 1}
        },
        "health": {"trip_after": 2, "cooldown_ms": 30000},
        "limits": {"backend": "redis"},
        "redis": {"url": redis.url(), "timeout_ms": 50}
    });
    let env = [("KEY_SLOW", "key-429"), ("KEY_OK", "key-ok-1")];
    let a = Gateway::start_with_env(routes.clone(), &[("openai", "openai")], extra.clone(), &env);
    let b = Gateway::start_with_env(routes, &[("openai", "openai")], extra, &env);
    for gw in [&a, &b] {
        assert!(gw.wait_for_log("connected to Redis", Duration::from_secs(10)));
    }
    let slow_sent = |mock: &Mock| {
        mock.requests()
            .iter()
            .filter(|r| {
                r.headers
                    .iter()
                    .any(|(k, v)| k == "authorization" && v == "Bearer key-429")
            })
            .count()
    };
    // Replica A meets the 429 (rotation reaches the slow key within two).
    for _ in 0..2 {
        assert_eq!(a.chat("k", false).await.status(), 200);
    }
    assert_eq!(slow_sent(&mock), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Replica B never sends with it: it learned of the cool-down.
    for _ in 0..6 {
        assert_eq!(b.chat("k", false).await.status(), 200);
    }
    assert_eq!(slow_sent(&mock), 1, "B used a key A saw refused");

    // A trips the bad deployment's circuit (two faults, each failed over).
    for _ in 0..2 {
        assert_eq!(a.chat("c", false).await.status(), 200);
    }
    assert_eq!(mock.hits("fail-500"), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..4 {
        assert_eq!(b.chat("c", false).await.status(), 200);
    }
    // B's first request learns of the open circuit with its first check
    // and goes to the next candidate; the others keep away from it.
    assert_eq!(
        mock.hits("fail-500"),
        2,
        "B tried a deployment whose circuit A had opened"
    );
}

/// A circuit one replica tripped half-opens for all of them with one
/// probe: when the shared cool-down ends, the replicas' requests (both
/// first choices again) send one probe in all; it fails, and the circuit
/// reopens everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_circuit_half_opens_with_one_probe_for_every_replica() {
    let mock = Mock::start().await;
    let redis = Redis::start();
    let routes = json!({"c": {"deployments": ["bad", "good"]}});
    let extra = json!({
        "deployments": {
            "bad": {"adapter": "openai", "base_url": mock.url, "model": "fail-500"},
            "good": {"adapter": "openai", "base_url": mock.url, "model": "gpt-good", "priority": 1}
        },
        "health": {"trip_after": 2, "cooldown_ms": 1500, "probe_window_ms": 10000},
        "limits": {"backend": "redis"},
        "redis": {"url": redis.url(), "timeout_ms": 50}
    });
    let (a, b) = replicas(routes, &["openai"], extra);
    for _ in 0..2 {
        assert_eq!(a.chat("c", false).await.status(), 200);
    }
    assert_eq!(mock.hits("fail-500"), 2, "A trips the circuit");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B learns of it (the first check defers it), then keeps away.
    for _ in 0..2 {
        assert_eq!(b.chat("c", false).await.status(), 200);
    }
    assert_eq!(mock.hits("fail-500"), 2);
    // The cool-down ends everywhere: each replica would probe on its own.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut tasks = Vec::new();
    for round in 0..4 {
        for gw in [&a, &b] {
            let url = gw.url.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(round * 30)).await;
                client()
                    .post(format!("{url}/v1/chat/completions"))
                    .body(r#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        mock.hits("fail-500"),
        3,
        "one probe for both replicas after the shared cool-down"
    );
    // It failed: the circuit is open again for both, for a whole cool-down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for gw in [&a, &b] {
        for _ in 0..2 {
            assert_eq!(gw.chat("c", false).await.status(), 200);
        }
    }
    assert_eq!(
        mock.hits("fail-500"),
        3,
        "the failed probe reopened the circuit"
    );
}

/// A client key's windows ride on the request's first deployment check:
/// one `EVALSHA` per request (counted by Redis), and the key's rpm holds
/// across two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_key_and_its_deployment_cost_one_round_trip() {
    let mock = Mock::start().await;
    let redis = Redis::start();
    let key = "sy-shared-team-secret";
    let extra = json!({
        "deployments": {"d": {"adapter": "openai", "base_url": mock.url, "model": "gpt-one",
            "rpm": 1000}},
        "auth": {"required": true, "keys": {
            "team": {"hash": switchyard::auth::hash_text(key), "rpm": 6}
        }},
        "limits": {"backend": "redis", "replicas_hint": 2, "queue": {"max_wait_ms": 0}},
        "redis": {"url": redis.url(), "timeout_ms": 50}
    });
    let routes = json!({"r": {"deployments": ["d"]}});
    let (a, b) = replicas(routes, &["openai"], extra);
    let call = |gw: &Gateway| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(key)
            .body(r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
    };
    // Each replica's connection has loaded the script.
    for gw in [&a, &b] {
        assert_eq!(call(gw).await.unwrap().status(), 200);
    }
    assert_eq!(redis.command("CONFIG RESETSTAT"), "+OK");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        for gw in [&a, &b] {
            let r = call(gw).await.unwrap();
            let status = r.status().as_u16();
            if status == 429 {
                let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                assert_eq!(body["error"]["code"], "client_key_rate_limited", "{body}");
            }
            statuses.push(status);
        }
    }
    // 6 a minute for the key across both replicas (not 6 each).
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "{statuses:?}");
    assert_eq!(mock.hits("gpt-one"), 6);
    assert_eq!(
        redis.evalsha_calls(),
        6,
        "one EVALSHA a request, the client key's check included"
    );
}

/// A deployment's max_in_flight holds across the replicas: two gateways,
/// a cap of 2, eight slow requests at once (four on each): they are served
/// two at a time in all (not two per replica), none refused, and every
/// lease is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_cap_holds_across_replicas() {
    let mock = Mock::start().await;
    mock.set_delay("gpt-capped", Duration::from_millis(300));
    let redis = Redis::start();
    let extra = json!({
        "deployments": {"d": {"adapter": "openai", "base_url": mock.url, "model": "gpt-capped", "max_in_flight": 2}},
        "limits": {"backend": "redis", "replicas_hint": 2, "queue": {"max_wait_ms": 8000}},
        "redis": {"url": redis.url(), "timeout_ms": 50}
    });
    let routes = json!({"r": {"deployments": ["d"]}});
    let (a, b) = replicas(routes, &["openai"], extra);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        tasks.push(tokio::spawn(async move {
            client()
                .post(format!("{url}/v1/chat/completions"))
                .body(r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    // Mid-run, the two places are leases in Redis.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(redis.command("ZCARD switchyard:inflight:d:d"), ":2");
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_150),
        "8 × 300 ms two at a time take 1.2 s; {took:?} means more ran at once"
    );
    assert_eq!(mock.hits("gpt-capped"), 8);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        redis.command("ZCARD switchyard:inflight:d:d"),
        ":0",
        "leases given back"
    );
}

/// Budget spend adds up across replicas: what A spent is counted by B,
/// whose next request after its first finds the budget spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_spend_adds_up_across_replicas() {
    let mock = Mock::start().await;
    let redis = Redis::start();
    let extra = json!({
        "deployments": {"d": {"adapter": "openai", "base_url": mock.url, "model": "gpt-b",
            "input_cost_per_1m": 1000.0, "output_cost_per_1m": 1000.0}},
        "budgets": {"all": {"period": "day", "limit_usd": 0.03, "action": "reject"}},
        "limits": {"backend": "redis"},
        "redis": {"url": redis.url(), "timeout_ms": 50}
    });
    let routes = json!({"r": {"deployments": ["d"]}});
    let (a, b) = replicas(routes, &["openai"], extra);
    // Each answer: 6 tokens at $1,000 per million = $0.006; A spends $0.030.
    for _ in 0..5 {
        assert_eq!(a.chat("r", false).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B knows nothing yet: its first request is served, and its settling
    // brings back the replicas' total.
    assert_eq!(b.chat("r", false).await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = b.chat("r", false).await;
        if r.status() == 429 {
            let body = crate::harness::json_body(r).await;
            assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "B never saw A's spend");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(mock.hits("gpt-b") <= 7, "{} served", mock.hits("gpt-b"));
    let (_, budgets) = b.admin("/admin/budgets").await;
    let spent = budgets["data"][0]["spent_usd"].as_f64().unwrap();
    assert!(spent >= 0.036 - 1e-9, "{budgets}");
}

/// A request in flight on one replica holds its budget estimate on every
/// replica: while A streams a request estimated above a hard stop's limit,
/// B refuses (it would not, counting only spend); once A's request has
/// settled at its real cost, B serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_reservations_count_on_every_replica() {
    let mock = Mock::start().await;
    let redis = Redis::start();
    let extra = json!({
        "deployments": {
            "d": {"adapter": "openai", "base_url": mock.url, "model": "gpt-b",
                "input_cost_per_1m": 1000.0, "output_cost_per_1m": 1000.0},
            "s": {"adapter": "openai", "base_url": mock.url, "model": "slow-stream",
                "input_cost_per_1m": 1000.0, "output_cost_per_1m": 1000.0}
        },
        "budgets": {"all": {"period": "day", "limit_usd": 0.05, "action": "reject"}},
        "limits": {"backend": "redis"},
        "redis": {"url": redis.url(), "timeout_ms": 50}
    });
    let routes = json!({"r": {"deployments": ["d"]}, "slow": {"deployments": ["s"]}});
    let (a, b) = replicas(routes, &["openai"], extra);
    // Answers cost $0.006 (6 tokens at $1,000 a million): far below $0.05.
    assert_eq!(b.chat("r", false).await.status(), 200);
    // A's stream (2 s) is estimated at over $0.1 (max_tokens 100).
    let url = a.url.clone();
    let slow = tokio::spawn(async move {
        let r = client()
            .post(format!("{url}/v1/chat/completions"))
            .body(r#"{"model":"slow","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        status
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // B's next admission syncs (and may not know yet); the one after counts
    // A's request in flight.
    let _ = b.chat("r", false).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = b.chat("r", false).await;
    assert_eq!(r.status(), 429, "B ignored A's request in flight");
    let body = crate::harness::json_body(r).await;
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    let (_, budgets) = b.admin("/admin/budgets").await;
    assert!(
        budgets["data"][0]["reserved_elsewhere_usd"]
            .as_f64()
            .unwrap()
            > 0.05,
        "{budgets}"
    );
    assert_eq!(slow.await.unwrap(), 200);
    // Settled at its real cost: B serves again once it has synced.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if b.chat("r", false).await.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still counts A's settled request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each upstream key's own limits hold across the replicas: two keys at 5
/// rps each, two gateways hammering for 2 s: each key is sent 10 (within
/// 5 %), not 10 per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_limits_hold_across_replicas() {
    let mock = Mock::start().await;
    let redis = Redis::start();
    let extra = json!({
        "deployments": {"d": {"adapter": "openai", "base_url": mock.url, "model": "gpt-keys",
            "api_key_env": ["KEY_ONE", "KEY_TWO"], "key_limits": {"rps": 5}}},
        "limits": {"backend": "redis", "replicas_hint": 2, "queue": {"max_wait_ms": 0}},
        "redis": {"url": redis.url(), "timeout_ms": 50}
    });
    let routes = json!({"r": {"deployments": ["d"]}});
    let env = [("KEY_ONE", "key-ok-1"), ("KEY_TWO", "key-ok-2")];
    let a = Gateway::start_with_env(routes.clone(), &[("openai", "openai")], extra.clone(), &env);
    let b = Gateway::start_with_env(routes, &[("openai", "openai")], extra, &env);
    for gw in [&a, &b] {
        assert!(gw.wait_for_log("connected to Redis", Duration::from_secs(10)));
    }
    let until = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for gw in [&a, &b] {
        for _ in 0..4 {
            tasks.push(tokio::spawn(hammer(gw.url.clone(), until)));
        }
    }
    let mut ok = 0;
    for t in tasks {
        let (o, _, other) = t.await.unwrap();
        assert!(other.is_empty(), "statuses {other:?}");
        ok += o;
    }
    let mut per_key = std::collections::HashMap::<String, usize>::new();
    for r in mock.requests() {
        if let Some((_, v)) = r.headers.iter().find(|(k, _)| k == "authorization") {
            *per_key.entry(v.clone()).or_default() += 1;
        }
    }
    assert_eq!(ok as usize, per_key.values().sum::<usize>());
    for key in ["Bearer key-ok-1", "Bearer key-ok-2"] {
        let n = per_key.get(key).copied().unwrap_or(0);
        assert!(
            (9..=11).contains(&n),
            "{key}: {n} in 2 s at 5 rps: {per_key:?}"
        );
    }
}
