//! Config and plugin checks at start and in `switchyard check`.

use std::process::Command;

use serde_json::json;

use crate::harness::repo;

fn run(args: &[&str], config: &serde_json::Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(deployment: serde_json::Value) -> serde_json::Value {
    json!({
        "plugins": {"dir": repo().join("plugins"), "cache_dir": repo().join("target/e2e-plugin-cache")},
        "routes": {"chat": {"strategy": "priority", "deployments": [deployment]}},
    })
}

#[test]
fn invalid_config_is_refused_naming_the_field() {
    let bad = config(json!({"name": "a", "adapter": "openai", "base_url": 42, "model": "m"}));
    for command in ["check", "serve"] {
        let (ok, stderr) = run(&[command], &bad);
        assert!(!ok, "{command} accepted an invalid config");
        assert!(
            stderr.contains("/routes/chat/deployments/0/base_url"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("is not of type \"string\""),
            "{command}: {stderr}"
        );
    }
    let (ok, stderr) = run(
        &["check"],
        &config(
            json!({"name": "a", "adapter": "openai", "base_url": "http://x/", "model": "m", "prio": 1}),
        ),
    );
    assert!(!ok);
    assert!(stderr.contains("prio"), "{stderr}");
}

#[test]
fn check_warns_about_missing_plugins_and_keys() {
    let mut c = config(
        json!({"name": "a", "adapter": "nope", "base_url": "http://127.0.0.1:9/v1", "model": "m",
        "api_key_env": "SWITCHYARD_TEST_SURELY_UNSET"}),
    );
    c["routes"]["chat"]["evaluator"] = json!("basic");
    let (ok, stderr) = run(&["check"], &c);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("at /routes/chat/deployments/0/adapter: plugin \"nope\" is not loaded"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SWITCHYARD_TEST_SURELY_UNSET is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("priority") && stderr.contains("strategy"),
        "lists loaded plugins: {stderr}"
    );
}

#[test]
fn bundled_default_config_checks_clean_apart_from_the_openai_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(repo().join("config/switchyard.json"))
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 warning(s)"), "{stderr}");
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
}
