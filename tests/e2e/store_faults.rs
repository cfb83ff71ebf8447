//! The store's faults never fail a request: while a client loops requests,
//! the database is replaced by garbage, deleted, and its writes refused by
//! a file-size limit (a full disk), or locked by another process; each
//! time the store reports degraded
//! mode in `/healthz` and recovers by itself once the fault is removed. A
//! gateway killed with SIGKILL under load leaves every committed row and a
//! database that passes `integrity_check`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::Gateway;
use crate::mock::Mock;

fn routes(mock: &Mock) -> serde_json::Value {
    json!({"ok": {"deployments": [
        {"name": "good", "adapter": "openai", "base_url": mock.url, "model": "gpt"}]}})
}

/// Requests in a loop until stopped: (answered, failed).
struct Loop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Loop {
    fn start(url: String) -> Loop {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let client = crate::harness::client();
            // Bounded: at most 20,000 requests or 120 s.
            let deadline = Instant::now() + Duration::from_secs(120);
            for _ in 0..20_000 {
                if s.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let r = client
                    .post(format!("{url}/v1/chat/completions"))
                    .body(r#"{"model":"ok","messages":[{"role":"user","content":"hi"}]}"#)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => o.fetch_add(1, Ordering::Relaxed),
                    _ => f.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Loop {
            stop,
            ok,
            failed,
            task,
        }
    }

    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Waits (bounded) until the store's state in `/healthz` is `want`.
async fn store_state(gw: &Gateway, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let store = gw.health().await["store"].clone();
        if store["state"] == want {
            return store;
        }
        assert!(
            Instant::now() < deadline,
            "the store stayed {store} (wanted {want})\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests recorded in the database file right now (0 while the file or
/// its tables do not exist yet: a recreated file is migrated a moment later).
fn rows_in(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|conn| conn.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// The requests in the database once the writer has caught up (the count
/// unchanged across 300 ms; the caller has stopped sending).
async fn settled_rows(path: &std::path::Path) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = rows_in(path);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = rows_in(path);
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "rows never settled: {now}");
        last = now;
    }
}

/// Waits until the database holds more than `n` requests.
async fn rows_above(gw: &Gateway, n: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if gw.db_path().exists() {
            let now = rows_in(&gw.db_path());
            if now > n {
                return now;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new rows past {n}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes `path` read-only (`on`) or writable again; false when this
/// machine cannot (root ignores permissions, and `chattr` needs a file
/// system that supports it).
fn read_only(path: &std::path::Path, on: bool) -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        std::process::Command::new("chattr")
            .arg(if on { "+i" } else { "-i" })
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
    } else {
        use std::os::unix::fs::PermissionsExt;
        let mode = if on { 0o444 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).is_ok()
    }
}

fn remove_database(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn store_faults_degrade_the_store_never_a_request() {
    let mock = Mock::start().await;
    let gw = Gateway::start(routes(&mock), &["openai"], json!({}));
    let db = gw.db_path();
    let load = Loop::start(gw.url.clone());
    rows_above(&gw, 5).await;

    // Replaced by garbage: degraded; the garbage removed, a fresh database.
    let garbage = db.with_extension("garbage");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    std::fs::rename(&garbage, &db).unwrap();
    let _ = std::fs::remove_file(format!("{}-wal", db.display()));
    let _ = std::fs::remove_file(format!("{}-shm", db.display()));
    let degraded = store_state(&gw, "degraded").await;
    assert!(
        degraded["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{degraded}"
    );
    remove_database(&db);
    store_state(&gw, "ok").await;
    let after_garbage = rows_above(&gw, 0).await;

    // Read-only when the store (re)opens it: degraded until writable again.
    // The file is made read-only while no record arrives (the load paused):
    // otherwise the store may reopen the empty file and write its schema
    // before the flag is set.
    let (ok_before, failed_before) = load.stop().await;
    store_state(&gw, "ok").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    remove_database(&db);
    std::fs::write(&db, b"").unwrap();
    let made_read_only = read_only(&db, true);
    let load = Loop::start(gw.url.clone());
    if made_read_only {
        store_state(&gw, "degraded").await;
        assert!(read_only(&db, false));
        remove_database(&db);
        store_state(&gw, "ok").await;
        rows_above(&gw, 0).await;
    } else {
        eprintln!("note: cannot make a file read-only here (root without chattr); phase skipped");
        remove_database(&db);
    }

    // Deleted: a new file, at once.
    remove_database(&db);
    rows_above(&gw, 0).await;
    assert_eq!(gw.health().await["store"]["state"], "ok");

    // A full disk: writes past a 4 KiB file-size limit fail (EFBIG). The
    // soft limit only: raising it back needs no privilege. The phase starts
    // with every earlier record written, so the rows it adds are exactly
    // the requests it answered: none is lost to the fault.
    let (ok_early, failed_early) = load.stop().await;
    let (ok_before, failed_before) = (ok_before + ok_early, failed_before + failed_early);
    let settled = settled_rows(&db).await;
    let dropped = gw.health().await["store"]["dropped"].clone();
    let load = Loop::start(gw.url.clone());
    let pid = gw.pid().to_string();
    let limit = |size: &str| {
        let out = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={size}:")])
            .output()
            .expect("prlimit (util-linux)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    limit("4096");
    store_state(&gw, "degraded").await;
    let before_recovery = rows_in(&db);
    limit("unlimited");
    store_state(&gw, "ok").await;
    // What waited in memory during the fault is written after it.
    rows_above(&gw, before_recovery).await;

    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "requests failed while the disk was full");
    rows_above(&gw, settled + ok as i64 - 1).await;
    assert_eq!(
        settled_rows(&db).await,
        settled + ok as i64,
        "every request answered during and after the full disk is recorded once"
    );
    assert_eq!(gw.health().await["store"]["dropped"], dropped);
    let (ok, failed) = (ok + ok_before, failed + failed_before);
    assert_eq!(failed, 0, "requests failed during store faults");
    assert!(ok > 20, "only {ok} requests ran");
    assert!(after_garbage > 0);
    assert!(
        gw.logs().contains("store degraded") && gw.logs().contains("store recovered"),
        "{}",
        gw.logs()
    );
}

/// The database made read-only while the store has it open (as when its
/// file system is remounted read-only): writes through the open files fail,
/// the store is degraded, and once the files are writable again it writes
/// what waited. Needs root (`chattr +i` refuses writes through open files;
/// permissions only apply when a file is opened): skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_made_read_only_while_open_degrades_the_store() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        eprintln!("note: not root: cannot make an open file read-only here; test skipped");
        return;
    }
    let mock = Mock::start().await;
    let gw = Gateway::start(routes(&mock), &["openai"], json!({}));
    let db = gw.db_path();
    let load = Loop::start(gw.url.clone());
    rows_above(&gw, 5).await;
    let files: Vec<std::path::PathBuf> = ["", "-wal"]
        .iter()
        .map(|s| std::path::PathBuf::from(format!("{}{s}", db.display())))
        .filter(|p| p.exists())
        .collect();
    for f in &files {
        assert!(read_only(f, true), "chattr +i {}", f.display());
    }
    let degraded = store_state(&gw, "degraded").await;
    let held = rows_in(&db);
    for f in &files {
        assert!(read_only(f, false));
    }
    assert!(degraded["reason"].is_string(), "{degraded}");
    store_state(&gw, "ok").await;
    rows_above(&gw, held).await;
    let (ok, failed) = load.stop().await;
    assert_eq!(
        failed, 0,
        "requests failed while the database was read-only"
    );
    // Every answered request is recorded, those of the read-only spell too.
    rows_above(&gw, ok as i64 - 1).await;
    assert_eq!(rows_in(&db), ok as i64);
    assert_eq!(gw.health().await["store"]["dropped"], 0);
}

/// Another process holds the database's write lock (a backup, an operator's
/// `sqlite3` session left in a transaction): the store is degraded while its
/// writes time out, keeps the records in memory, and writes every one of
/// them once the lock is gone. No request fails or waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_delays_records_and_loses_none() {
    let mock = Mock::start().await;
    let gw = Gateway::start(routes(&mock), &["openai"], json!({}));
    let db = gw.db_path();
    let load = Loop::start(gw.url.clone());
    rows_above(&gw, 5).await;

    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let degraded = store_state(&gw, "degraded").await;
    assert!(
        degraded["reason"]
            .as_str()
            .is_some_and(|r| r.contains("locked") || r.contains("busy")),
        "{degraded}"
    );
    // Requests go on meanwhile, answered as fast as before.
    let locked_rows = rows_in(&db);
    let before = Instant::now();
    assert_eq!(gw.chat("ok", false).await.status(), 200);
    assert!(before.elapsed() < Duration::from_millis(500));
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    store_state(&gw, "ok").await;

    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "requests failed while the database was locked");
    // Every answered request is recorded, those of the locked spell too.
    let all = ok as i64 + 1;
    rows_above(&gw, all - 1).await;
    assert_eq!(rows_in(&db), all, "{locked_rows} when locked");
    assert_eq!(
        gw.health().await["store"]["dropped"],
        0,
        "{}",
        gw.health().await
    );
}

#[tokio::test]
async fn a_gateway_killed_under_load_keeps_every_committed_row() {
    let mock = Mock::start().await;
    let mut gw = Gateway::start(routes(&mock), &["openai"], json!({}));
    let loads: Vec<Loop> = (0..4).map(|_| Loop::start(gw.url.clone())).collect();
    rows_above(&gw, 200).await;
    // Committed (visible to a reader) just before the kill.
    let committed = rows_in(&gw.db_path());
    let status = std::process::Command::new("kill")
        .args(["-9", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for l in loads {
        l.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let conn = rusqlite::Connection::open(gw.db_path()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let after: i64 = conn
        .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert!(
        after >= committed,
        "{after} rows after the kill, {committed} committed before"
    );
    // Every request row has its attempt rows (one transaction each batch).
    let orphans: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM requests r WHERE r.attempts > 0 AND NOT EXISTS
             (SELECT 1 FROM attempts a WHERE a.request_id = r.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    drop(conn);
    // Restarted on the same database: it opens, serves and records on.
    gw.restart();
    let r = crate::harness::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "after-the-kill")
        .body(json!({"model": "ok", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = gw.admin("/admin/requests/after-the-kill").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rows_in(&gw.db_path()) > after);
    let conn = rusqlite::Connection::open(gw.db_path()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
