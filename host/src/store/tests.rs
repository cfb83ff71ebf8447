//! The writer: rows committed and readable, degraded mode and recovery,
//! drops counted when the queue is full.

use std::time::Instant;

use super::*;

fn request(n: u32) -> Row {
    Row::Request(
        RequestRow {
            id: format!("r{n}").into(),
            ts_ms: 1_700_000_000_000 + n as i64,
            route: "chat".into(),
            status: 200,
            outcome: "ok",
            attempts: 1,
            latency_ms: 1.5,
            cost: Some(0.25),
            ..Default::default()
        },
        Vec::new(),
    )
}

fn count(path: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn rows_are_committed_and_the_schema_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/switchyard.db");
    let store = Store::open(&path);
    for n in 0..1000 {
        store.record(request(n));
    }
    store.record(Row::Request(
        RequestRow {
            id: "r1".into(),
            route: "chat".into(),
            outcome: "failed",
            ..Default::default()
        },
        vec![AttemptRow {
            request_id: "r1".into(),
            n: 1,
            deployment: "a".into(),
            adapter: "openai".into(),
            class: Some("overloaded"),
            status: Some(503),
            billed: true,
            quality: Some(QualityRow {
                evaluator: "basic".into(),
                score: Some(0.25),
                pass: Some(false),
                reasons: Some(r#"["empty answer"]"#.into()),
            }),
            ..Default::default()
        }],
    ));
    store.record(Row::Event(EventRow {
        kind: "failover".into(),
        subject: "a".into(),
        detail: "{}".into(),
        ..Default::default()
    }));
    assert!(store.flush(Duration::from_secs(10)));
    assert_eq!(store.status(), Status::Ok);
    assert_eq!(count(&path, "requests"), 1001);
    assert_eq!(count(&path, "attempts"), 1);
    assert_eq!(count(&path, "events"), 1);
    assert_eq!(
        count(&path, "quality_scores"),
        1,
        "the verdict is a quality score"
    );
    drop(store);
    // Opened again: migrations already applied, rows kept.
    let again = Store::open(&path);
    again.record(request(5000));
    assert!(again.flush(Duration::from_secs(10)));
    assert_eq!(count(&path, "requests"), 1002);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn an_unwritable_database_degrades_the_store_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // Its folder is a file: nothing can be created there.
    let blocker = dir.path().join("db");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let path = blocker.join("switchyard.db");
    let store = Store::open(&path);
    store.record(request(1));
    let waited = Instant::now();
    while store.status() == Status::Ok && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(store.status(), Status::Degraded(_)));
    // The fault goes away: the waiting row lands.
    std::fs::remove_file(&blocker).unwrap();
    assert!(store.flush(Duration::from_secs(20)));
    assert_eq!(store.status(), Status::Ok);
    assert_eq!(count(&path, "requests"), 1);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("db");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let store = Store::open(&blocker.join("switchyard.db"));
    // What the queue and the writer's retry buffer can hold, and 10,000 more.
    let total = QUEUE_ROWS + MAX_PENDING + 10_000;
    let started = Instant::now();
    for n in 0..total as u32 {
        store.record(request(n));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "record blocked"
    );
    assert!(store.dropped() >= 10_000, "{} dropped", store.dropped());
}
