//! The store's tables, as numbered migrations: migration `n` takes a
//! database from `PRAGMA user_version` `n` to `n + 1`. Append only: a
//! released migration never changes, so every database reaches the same
//! schema whatever version it started from.

/// Applied in order, each in its own transaction with the version bump.
pub const MIGRATIONS: &[&str] = &[
    // 1: requests, their attempts, and events (failover, rate limits, health
    // and circuit transitions, alerts), each with a millisecond timestamp.
    "CREATE TABLE requests (
        id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        route TEXT NOT NULL,
        caller TEXT,
        tags TEXT,
        stream INTEGER NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        deployment TEXT,
        attempts INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        overhead_ms REAL,
        ttft_ms REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost REAL,
        estimated INTEGER NOT NULL DEFAULT 0,
        verdict TEXT
    );
    CREATE INDEX requests_ts ON requests (ts_ms);
    CREATE INDEX requests_id ON requests (id);
    CREATE TABLE attempts (
        request_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        deployment TEXT NOT NULL,
        adapter TEXT NOT NULL,
        class TEXT,
        status INTEGER,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost REAL,
        billed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX attempts_request ON attempts (request_id);
    CREATE INDEX attempts_ts ON attempts (ts_ms);
    CREATE TABLE events (
        ts_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_ts ON events (ts_ms);
    CREATE INDEX events_kind ON events (kind, ts_ms);",
    // 2: attempts point at their request's row: a request id comes from the
    // caller (x-request-id) and may repeat, so joining on it double-counts.
    "ALTER TABLE attempts ADD COLUMN request_rowid INTEGER;
    UPDATE attempts SET request_rowid = (SELECT MAX(r.rowid) FROM requests r
        WHERE r.id = attempts.request_id AND r.ts_ms <= attempts.ts_ms + 1);
    CREATE INDEX attempts_request_rowid ON attempts (request_rowid);",
    // 3: quality scores: each evaluator verdict on an attempt's answer (the
    // series per deployment that routing by quality reads). Columns of the
    // attempt's row, not rows of their own: a verdict comes with most
    // requests of an evaluated route, and a second insert with its indexes
    // cost ~10 µs of the writer's CPU per request; `quality_scores` is the
    // view of them.
    "ALTER TABLE attempts ADD COLUMN evaluator TEXT;
    ALTER TABLE attempts ADD COLUMN score REAL;
    ALTER TABLE attempts ADD COLUMN pass INTEGER;
    ALTER TABLE attempts ADD COLUMN reasons TEXT;
    CREATE VIEW quality_scores AS
        SELECT ts_ms, request_rowid, request_id, n, deployment, evaluator, score, pass, reasons
        FROM attempts WHERE score IS NOT NULL;",
    // 4: whether an attempt's usage (and so its cost) was estimated from
    // text lengths because the upstream reported none; the request's own
    // flag says only that one of its attempts was.
    "ALTER TABLE attempts ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;",
    // 5: attempts are found by their request's row (`request_rowid`, since
    // 2): the index on the request id text was only written, never read,
    // and cost the writer a text B-tree insert per attempt.
    "DROP INDEX IF EXISTS attempts_request;",
    // 6: stream events an attempt's adapter skipped as malformed.
    "ALTER TABLE attempts ADD COLUMN malformed INTEGER NOT NULL DEFAULT 0;",
    // 7: the response cache's entries (its second layer, kept across
    // restarts), and what the cache did for each request (`hit`, `miss`,
    // `bypass`; none when its route does not cache) with the cost a hit
    // saved.
    "CREATE TABLE cache (
        key BLOB PRIMARY KEY,
        route TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        deployment TEXT NOT NULL,
        cost REAL NOT NULL,
        body BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX cache_expires ON cache (expires_ms);
    ALTER TABLE requests ADD COLUMN cache TEXT;
    ALTER TABLE requests ADD COLUMN saved_usd REAL;",
    // 8: applications' judgements of answers (`POST /v1/feedback`), beside
    // the evaluators' verdicts: who judged which request, served by which
    // deployment, how well.
    "CREATE TABLE feedback (
        ts_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        route TEXT,
        deployment TEXT,
        caller TEXT,
        score REAL NOT NULL,
        comment TEXT
    );
    CREATE INDEX feedback_ts ON feedback (ts_ms);",
    // 9: shadow strategies' decisions (`routes.<m>.shadow_strategies`),
    // each beside the live order's first choice and the deployment that
    // served, with the request's usage for what-if costs.
    "CREATE TABLE shadow (
        ts_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        route TEXT NOT NULL,
        strategy TEXT NOT NULL,
        live_strategy TEXT,
        live_choice TEXT,
        choice TEXT,
        served TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost REAL,
        error TEXT
    );
    CREATE INDEX shadow_ts ON shadow (ts_ms);",
    // 10: a request's row number is a column of its own (`seq`, an alias
    // of the rowid), so it survives what renumbers implicit rowids: the
    // sqlite3 shell's `.dump` and `.recover` write rows without them, and a
    // restored database had every attempt (`request_rowid`) pointing at
    // another request's row once retention had deleted the first ones.
    // The table is copied once, rows keeping their numbers.
    "CREATE TABLE requests_seq (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        route TEXT NOT NULL,
        caller TEXT,
        tags TEXT,
        stream INTEGER NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        deployment TEXT,
        attempts INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        overhead_ms REAL,
        ttft_ms REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost REAL,
        estimated INTEGER NOT NULL DEFAULT 0,
        verdict TEXT,
        cache TEXT,
        saved_usd REAL
    );
    INSERT INTO requests_seq (seq, id, ts_ms, route, caller, tags, stream, status, outcome,
        deployment, attempts, latency_ms, overhead_ms, ttft_ms, prompt_tokens, completion_tokens,
        cost, estimated, verdict, cache, saved_usd)
    SELECT rowid, id, ts_ms, route, caller, tags, stream, status, outcome,
        deployment, attempts, latency_ms, overhead_ms, ttft_ms, prompt_tokens, completion_tokens,
        cost, estimated, verdict, cache, saved_usd FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_seq RENAME TO requests;
    CREATE INDEX requests_ts ON requests (ts_ms);
    CREATE INDEX requests_id ON requests (id);",
    // 11: a request's last attempt (most requests' only one) is columns of
    // the request's own row (`a_*`, set when `a_deployment` is), and only
    // the attempts before it are rows of their own (`attempt_rows`, the
    // table `attempts` was, its rows and indexes kept): the second insert
    // with its two index entries took the writer from ~3.1 to ~4.2 µs of
    // CPU a request. `attempts` is the view of every attempt, as the table was;
    // `request_attempts` adds each one's request (`request_ts_ms`, `route`,
    // `caller`, `tags`, `request_status`, `outcome`) for the reports, whose
    // time filters go through the requests' index.
    "ALTER TABLE requests ADD COLUMN a_ts_ms INTEGER;
    ALTER TABLE requests ADD COLUMN a_deployment TEXT;
    ALTER TABLE requests ADD COLUMN a_adapter TEXT;
    ALTER TABLE requests ADD COLUMN a_class TEXT;
    ALTER TABLE requests ADD COLUMN a_status INTEGER;
    ALTER TABLE requests ADD COLUMN a_latency_ms REAL;
    ALTER TABLE requests ADD COLUMN a_ttft_ms REAL;
    ALTER TABLE requests ADD COLUMN a_prompt_tokens INTEGER;
    ALTER TABLE requests ADD COLUMN a_completion_tokens INTEGER;
    ALTER TABLE requests ADD COLUMN a_cost REAL;
    ALTER TABLE requests ADD COLUMN a_billed INTEGER;
    ALTER TABLE requests ADD COLUMN a_evaluator TEXT;
    ALTER TABLE requests ADD COLUMN a_score REAL;
    ALTER TABLE requests ADD COLUMN a_pass INTEGER;
    ALTER TABLE requests ADD COLUMN a_reasons TEXT;
    ALTER TABLE requests ADD COLUMN a_estimated INTEGER;
    ALTER TABLE requests ADD COLUMN a_malformed INTEGER;
    DROP VIEW quality_scores;
    ALTER TABLE attempts RENAME TO attempt_rows;
    CREATE VIEW attempts AS
        SELECT request_id, n, ts_ms, deployment, adapter, class, status, latency_ms,
            ttft_ms, prompt_tokens, completion_tokens, cost, billed, request_rowid,
            evaluator, score, pass, reasons, estimated, malformed
        FROM attempt_rows
        UNION ALL
        SELECT id, attempts, a_ts_ms, a_deployment, a_adapter, a_class, a_status, a_latency_ms,
            a_ttft_ms, a_prompt_tokens, a_completion_tokens, a_cost, a_billed, seq,
            a_evaluator, a_score, a_pass, a_reasons, a_estimated, a_malformed
        FROM requests WHERE a_deployment IS NOT NULL;
    CREATE VIEW request_attempts AS
        SELECT a.request_id, a.n, a.ts_ms, a.deployment, a.adapter, a.class, a.status,
            a.latency_ms, a.ttft_ms, a.prompt_tokens, a.completion_tokens, a.cost, a.billed,
            a.request_rowid, a.evaluator, a.score, a.pass, a.reasons, a.estimated, a.malformed,
            r.ts_ms AS request_ts_ms, r.route, r.caller, r.tags, r.status AS request_status,
            r.outcome
        FROM attempt_rows a JOIN requests r ON r.seq = a.request_rowid
        UNION ALL
        SELECT id, attempts, a_ts_ms, a_deployment, a_adapter, a_class, a_status, a_latency_ms,
            a_ttft_ms, a_prompt_tokens, a_completion_tokens, a_cost, a_billed, seq,
            a_evaluator, a_score, a_pass, a_reasons, a_estimated, a_malformed,
            ts_ms, route, caller, tags, status, outcome
        FROM requests WHERE a_deployment IS NOT NULL;
    CREATE VIEW quality_scores AS
        SELECT ts_ms, request_rowid, request_id, n, deployment, evaluator, score, pass, reasons
        FROM attempts WHERE score IS NOT NULL;",
];

/// Brings `conn` to the newest schema.
pub fn migrate(conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        // Said before and after: one copies the requests table (10: about
        // 2.5 s a million rows), and meanwhile records wait in memory.
        let started = std::time::Instant::now();
        if version > 0 {
            tracing::info!(from = n, to = n + 1, "store: migrating the database schema");
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n as i64 + 1)?;
        tx.commit()?;
        if version > 0 {
            tracing::info!(
                to = n + 1,
                took_ms = started.elapsed().as_millis() as u64,
                "store: database schema migrated"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// Each attempt's request id beside the id of the request its
    /// `request_rowid` points at.
    fn links(conn: &Connection) -> Vec<(String, Option<String>)> {
        let mut q = conn
            .prepare(
                "SELECT a.request_id, r.id FROM attempts a
                 LEFT JOIN requests r ON r.rowid = a.request_rowid ORDER BY a.request_id",
            )
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Five requests, each with an attempt pointing at its row (in
    /// `table`: `attempts` before schema 11, `attempt_rows` since), the
    /// first two deleted as retention does: rows numbered from 3.
    fn fill(conn: &Connection, table: &str) {
        for n in 1..=5 {
            conn.execute(
                "INSERT INTO requests (id, ts_ms, route, stream, status, outcome, attempts, latency_ms)
                 VALUES (?1, ?2, 'chat', 0, 200, 'ok', 1, 1.0)",
                (format!("r{n}"), n),
            )
            .unwrap();
            let row = conn.last_insert_rowid();
            conn.execute(
                &format!(
                    "INSERT INTO {table} (request_id, request_rowid, n, ts_ms, deployment, adapter, latency_ms)
                     VALUES (?1, ?2, 1, ?3, 'd', 'openai', 1.0)"
                ),
                (format!("r{n}"), row, n),
            )
            .unwrap();
        }
        conn.execute("DELETE FROM requests WHERE ts_ms <= 2", [])
            .unwrap();
        conn.execute(&format!("DELETE FROM {table} WHERE ts_ms <= 2"), [])
            .unwrap();
    }

    fn intact() -> Vec<(String, Option<String>)> {
        (3..=5)
            .map(|n| (format!("r{n}"), Some(format!("r{n}"))))
            .collect()
    }

    #[test]
    fn requests_keep_their_row_numbers_through_a_dump_and_restore() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        fill(&conn, "attempt_rows");
        assert_eq!(links(&conn), intact());
        // What the sqlite3 shell's `.dump` does: each table created again
        // from its own SQL, filled with `SELECT *` (no implicit rowid).
        let mut restored = Connection::open_in_memory().unwrap();
        let tables: Vec<(String, String)> = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN ('requests', 'attempt_rows')")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (_, sql) in &tables {
            restored.execute_batch(sql).unwrap();
        }
        let views: Vec<String> = conn
            .prepare("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = 'attempts'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for sql in &views {
            restored.execute_batch(sql).unwrap();
        }
        let tx = restored.transaction().unwrap();
        for (name, _) in &tables {
            let width = conn
                .prepare(&format!("SELECT * FROM {name}"))
                .unwrap()
                .column_count();
            let marks = vec!["?"; width].join(", ");
            let mut insert = tx
                .prepare(&format!("INSERT INTO {name} VALUES ({marks})"))
                .unwrap();
            let mut select = conn.prepare(&format!("SELECT * FROM {name}")).unwrap();
            let mut rows = select.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let values: Vec<rusqlite::types::Value> =
                    (0..width).map(|i| row.get(i).unwrap()).collect();
                insert.execute(rusqlite::params_from_iter(values)).unwrap();
            }
        }
        tx.commit().unwrap();
        assert_eq!(links(&restored), intact());
    }

    #[test]
    fn the_migration_keeps_every_request_row_number() {
        let mut conn = Connection::open_in_memory().unwrap();
        {
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..9] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 9).unwrap();
            tx.commit().unwrap();
        }
        fill(&conn, "attempts");
        conn.execute(
            "UPDATE requests SET cache = 'hit', saved_usd = 0.5, verdict = 'pass' WHERE id = 'r4'",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(links(&conn), intact());
        let kept: (i64, String, f64, String) = conn
            .query_row(
                "SELECT seq, cache, saved_usd, verdict FROM requests WHERE id = 'r4'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(kept, (4, "hit".into(), 0.5, "pass".into()));
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requests'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 2);
    }
}
