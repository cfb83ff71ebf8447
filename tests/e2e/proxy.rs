//! Outbound proxies named by the environment: plain `http` upstreams are
//! sent to the proxy in absolute form with its credentials, `https` ones
//! through a `CONNECT` tunnel, `NO_PROXY` exempts hosts, and a proxy the
//! gateway cannot speak to stops it at start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Gateway, deployment, json_body};
use crate::mock::Mock;

/// A forward proxy on 127.0.0.1 that records the head of the first request
/// on each connection. A `CONNECT` is refused with 403 (no TLS upstream
/// exists here); anything else is relayed to the host its absolute-form
/// target names.
struct Proxy {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://user:secret@{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, seen.clone()));
            }
        });
        Proxy { url, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn relay(mut client: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    heads.lock().unwrap().push(text.clone());
    let target = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    if text.starts_with("CONNECT ") {
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    let authority = target
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let Ok(mut upstream) = TcpStream::connect(authority).await else {
        return;
    };
    if upstream.write_all(&head).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

fn routes(base_url: &str) -> serde_json::Value {
    json!({"chat": {"strategy": "priority", "deployments": [deployment("a", base_url, "gpt")]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_upstreams_go_through_the_proxy_with_its_credentials() {
    let mock = Mock::start().await;
    let proxy = Proxy::start().await;
    let gateway = Gateway::start_with_env(
        routes(&mock.url),
        &[("priority", "priority"), ("openai", "openai")],
        json!({}),
        &[("HTTP_PROXY", &proxy.url)],
    );
    gateway.assert_log("outbound proxy");
    let r = gateway.chat("chat", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await["model"], "a");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let port = mock
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(
        heads[0].starts_with(&format!(
            "POST http://127.0.0.1:{port}/v1/chat/completions HTTP/1.1\r\n"
        )),
        "{}",
        heads[0]
    );
    // "user:secret", as the proxy URL gives it.
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("proxy-authorization: basic dxnlcjpzzwnyzxq=\r\n"),
        "{}",
        heads[0]
    );
    assert_eq!(mock.hits("gpt"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_tunnelled_and_no_proxy_exempts_hosts() {
    let mock = Mock::start().await;
    let proxy = Proxy::start().await;
    let gateway = Gateway::start_with_env(
        json!({
            "tls": {"strategy": "priority", "deployments": [deployment("t", "https://api.example.test/v1", "gpt")]},
            "local": {"strategy": "priority", "deployments": [deployment("l", &mock.url, "gpt")]},
        }),
        &[("priority", "priority"), ("openai", "openai")],
        json!({}),
        &[("ALL_PROXY", &proxy.url), ("NO_PROXY", "127.0.0.1")],
    );
    let r = gateway.chat("tls", false).await;
    assert_eq!(r.status(), 502);
    let body = json_body(r).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("outbound proxy"), "{message}");
    let heads = proxy.heads();
    assert!(!heads.is_empty());
    for head in &heads {
        assert!(
            head.starts_with("CONNECT api.example.test:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authorization: basic dxnlcjpzzwnyzxq="),
            "{head}"
        );
    }
    let before = heads.len();
    let r = gateway.chat("local", false).await;
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(proxy.heads().len(), before, "NO_PROXY host went through");
    assert_eq!(mock.hits("gpt"), 1);
}

#[test]
fn a_proxy_the_gateway_cannot_speak_to_stops_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let config = json!({
        "listen": "127.0.0.1:0",
        "plugins": {"dir": crate::harness::repo().join("plugins"), "cache_dir": crate::harness::repo().join("target/e2e-plugin-cache")},
        "routes": routes("http://127.0.0.1:9/v1"),
    });
    std::fs::write(&path, config.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("ALL_PROXY", "socks5://127.0.0.1:1080")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("outbound proxy") && stderr.contains("socks5://"),
        "{stderr}"
    );
}
