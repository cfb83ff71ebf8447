use super::rows::verdict_json;
use super::*;

#[test]
fn verdicts_are_stored_as_json_wrote_them() {
    for (score, pass, reasons) in [
        (1.0f32, true, vec![]),
        (
            0.3,
            false,
            vec!["empty \"answer\"".to_string(), "é\n".into()],
        ),
        (0.9, true, vec!["x".into()]),
    ] {
        let v = Verdict {
            score,
            pass,
            reasons,
        };
        let before =
            serde_json::json!({"pass": v.pass, "score": v.score, "reasons": v.reasons}).to_string();
        assert_eq!(verdict_json(&v), before);
    }
}

#[test]
fn cost_charges_cached_prompt_tokens_and_cache_writes_at_their_prices() {
    let p = Prices {
        input: 2.5,
        output: 10.0,
        cached_input: 1.25,
        cache_write: 3.125,
    };
    let u = Usage {
        prompt_tokens: 1_000,
        completion_tokens: 500,
        cached_prompt_tokens: 400,
        reasoning_tokens: 0,
        cache_write_tokens: 100,
    };
    let expected = (500.0 * 2.5 + 400.0 * 1.25 + 100.0 * 3.125 + 500.0 * 10.0) / 1e6;
    assert!((p.cost(&u) - expected).abs() < 1e-12);
    // Counts an upstream overstates are capped at the prompt, reads first:
    // never a negative number of plain prompt tokens.
    let over = Usage {
        cached_prompt_tokens: 900,
        cache_write_tokens: 900,
        ..u
    };
    let expected = (900.0 * 1.25 + 100.0 * 3.125 + 500.0 * 10.0) / 1e6;
    assert!((p.cost(&over) - expected).abs() < 1e-12);
    // The split /metrics counts too: it adds up to the prompt.
    assert_eq!(u.prompt_split(), (500, 400, 100));
    assert_eq!(over.prompt_split(), (0, 900, 100));
}

#[test]
fn content_is_counted_in_requests_answers_and_chunks() {
    assert_eq!(
        content_chars(r#"{"messages":[{"role":"user","content":"héllo"},{"content": "a\"b"}]}"#),
        5 + 4
    );
    assert_eq!(
        content_chars(r#"{"choices":[{"delta":{"content":null}}]}"#),
        0
    );
    assert_eq!(content_chars(r#"{"content":"unterminated"#), 12);
    assert_eq!(estimate_tokens(0), 0);
    assert_eq!(estimate_tokens(9), 3);
}

#[test]
fn a_dropped_recorder_still_delivers_its_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite"));
    let sinks = Arc::new(Sinks {
        store: Some(store.clone()),
        ..Sinks::default()
    });
    let health = DeploymentHealth::default();
    {
        let mut rec = Recorder::new(sinks.clone(), Arc::from("r1"), vec![]);
        rec.record().unwrap().route = "m".into();
        let a = AttemptRecord::new("d", "openai", Prices::default());
        rec.end_attempt(&health, a, Some(None));
        // dropped here: the client went away
    }
    let mut rec = Recorder::new(sinks, Arc::from("r2"), vec![]);
    let mut stream_rec = rec.hand_over();
    rec.finish(End::Answered); // empty: nothing
    stream_rec.record().unwrap().route = "m".into();
    stream_rec.finish(End::StreamFailed);
    assert!(store.flush(Duration::from_secs(5)));
    let conn = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    let rows: Vec<(String, String, i64)> = conn
        .prepare("SELECT id, outcome, status FROM requests ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            ("r1".into(), "client_gone".into(), 499),
            ("r2".into(), "stream_failed".into(), 200)
        ]
    );
}

#[test]
fn a_panic_mid_attempt_still_records_the_request_and_its_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite"));
    let sinks = Arc::new(Sinks {
        store: Some(store.clone()),
        ..Sinks::default()
    });
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut rec = Recorder::new(sinks.clone(), Arc::from("boom"), vec![]);
        rec.record().unwrap().route = "m".into();
        let a = AttemptRecord::new("d", "openai", Prices::default());
        rec.open_attempt(&a);
        panic!("a bug mid-attempt");
    }));
    assert!(panicked.is_err());
    assert!(store.flush(Duration::from_secs(5)));
    let conn = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    let (outcome, status, attempts): (String, i64, i64) = conn
        .query_row(
            "SELECT outcome, status, attempts FROM requests WHERE id = 'boom'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((outcome.as_str(), status, attempts), ("panic", 500, 1));
    let deployment: String = conn
        .query_row("SELECT deployment FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(deployment, "d");
}

/// An attempt still open when the request's deadline passed (the serving
/// future dropped, the client sent a 504) is `deadline` in the record, never
/// a success, and says nothing of the deployment's figures (not a
/// deployment fault: a caller's short deadline must not manufacture
/// failures); one a client left stays unclassed.
#[test]
fn an_attempt_cut_by_the_deadline_is_abandoned_not_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite"));
    let sinks = Arc::new(Sinks {
        store: Some(store.clone()),
        ..Sinks::default()
    });
    for (id, end) in [
        ("late", End::Failed { status: 504 }),
        ("gone", End::ClientGone),
    ] {
        let mut rec = Recorder::new(sinks.clone(), Arc::from(id), vec![]);
        rec.record().unwrap().route = "m".into();
        rec.open_attempt(&AttemptRecord::new(id, "openai", Prices::default()));
        rec.finish(end);
    }
    assert!(store.flush(Duration::from_secs(5)));
    let conn = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    let class = |d: &str| -> Option<String> {
        conn.query_row(
            "SELECT class FROM attempts WHERE deployment = ?1",
            [d],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(class("late").as_deref(), Some("deadline"));
    assert!(!FailureClass::Deadline.is_deployment_fault());
    assert_eq!(class("gone"), None);
    for d in ["late", "gone"] {
        assert!(sinks.monitor.view(d).is_none(), "{d} reached the monitor");
    }
}

/// A client that leaves while an answer is being judged (its usage read,
/// the evaluator still running): the attempt keeps what the provider
/// billed, and its cost.
#[test]
fn a_client_gone_during_evaluation_keeps_the_billed_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite"));
    let sinks = Arc::new(Sinks {
        store: Some(store.clone()),
        ..Sinks::default()
    });
    let prices = Prices {
        input: 1.0,
        output: 2.0,
        cached_input: 0.5,
        cache_write: 1.25,
    };
    {
        let mut rec = Recorder::new(sinks.clone(), Arc::from("judged"), vec![]);
        rec.record().unwrap().route = "m".into();
        let mut a = AttemptRecord::new("d", "openai", prices);
        rec.open_attempt(&a);
        a.set_usage(
            Usage {
                prompt_tokens: 1_000_000,
                completion_tokens: 500_000,
                ..Usage::default()
            },
            false,
        );
        rec.update_open_attempt(&a);
        // dropped here, mid-evaluation: the client went away
    }
    assert!(store.flush(Duration::from_secs(5)));
    let conn = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    let (cost, billed, prompt): (f64, bool, i64) = conn
        .query_row(
            "SELECT cost, billed, prompt_tokens FROM attempts WHERE deployment = 'd'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((billed, prompt), (true, 1_000_000));
    assert!((cost - 2.0).abs() < 1e-9, "{cost}");
}
