use super::*;
use switchyard_sdk::Capabilities;
use switchyard_sdk::testing::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

fn assert_parts(actual: Parts, expected: [f64; 4]) {
    let a = [
        actual.capability,
        actual.cost,
        actual.performance,
        actual.availability,
    ];
    assert!(
        a.iter().zip(expected).all(|(&a, e)| close(a, e)),
        "{a:?} != {expected:?}"
    );
}

fn priced(name: &str, per_1m: f64) -> Candidate {
    let mut c = candidate(name);
    c.input_cost_per_1m = per_1m;
    c.output_cost_per_1m = per_1m;
    c
}

fn with_priority(priority: TaskPriority) -> RequestSummary {
    RequestSummary {
        priority,
        ..request(1000, None)
    }
}

#[test]
fn parts_are_proportional_to_the_best() {
    let mut c = [priced("a", 1.0), priced("b", 2.0), candidate("c")];
    // Capability: the request needs tools; b offers nothing more and has
    // a lower quality: (0 + 0.8) / 2 against (1 + 1) / 2.
    c[1].supports = Capabilities::TOOLS;
    c[1].quality = 0.8;
    // Performance: a is quicker, b streams faster; c has no traffic.
    (
        c[0].recent.latency_p50_ms,
        c[0].recent.output_tokens_per_second,
    ) = (100.0, 50.0);
    (
        c[1].recent.latency_p50_ms,
        c[1].recent.output_tokens_per_second,
    ) = (200.0, 100.0);
    // Availability: success × headroom; c is idle with a 10 % error rate.
    (c[0].recent.attempts, c[0].recent.success_rate) = (10, 0.9);
    c[0].headroom = 0.5;
    (c[1].recent.attempts, c[1].recent.success_rate) = (10, 0.9);
    c[2].error_rate = 0.1;
    let mut r = request(1000, None);
    r.needs = Capabilities::TOOLS;
    let ranking = rank(&r, &c, &Config::default());
    let parts: Vec<Parts> = ranking.entries.iter().map(|e| e.parts).collect();
    assert_parts(parts[0], [1.0, 1.0, 0.75, 0.5]);
    assert_parts(parts[1], [0.4, 0.5, 0.75, 1.0]);
    assert_parts(parts[2], [1.0, 0.0, UNKNOWN_PERFORMANCE, 1.0]);
    // 0.3 + 0.25 + 0.1875 + 0.1 = 0.8375; 0.12 + 0.125 + 0.1875 + 0.2 =
    // 0.6325; 0.3 + 0 + 0.125 + 0.2 = 0.625.
    let scores: Vec<f64> = ranking.entries.iter().map(|e| e.score).collect();
    assert!(
        close(scores[0], 0.8375) && close(scores[1], 0.6325),
        "{scores:?}"
    );
    assert!(close(scores[2], 0.625), "{scores:?}");
    assert_eq!(ranking.order, vec![0, 1, 2]);
}

#[test]
fn streams_are_judged_by_time_to_first_token() {
    let mut c = [candidate("slow-start"), candidate("quick-start")];
    (c[0].recent.latency_p50_ms, c[0].recent.ttft_p50_ms) = (500.0, 400.0);
    (c[1].recent.latency_p50_ms, c[1].recent.ttft_p50_ms) = (900.0, 100.0);
    let mut r = request(10, None);
    assert_eq!(rank(&r, &c, &Config::default()).order, vec![0, 1]);
    r.stream = true;
    let ranking = rank(&r, &c, &Config::default());
    assert_eq!(ranking.order, vec![1, 0]);
    assert!(close(ranking.entries[0].parts.performance, 0.25));
}

#[test]
fn high_and_critical_requests_pay_for_quality_and_speed() {
    // "cheap": a quarter of the price, twice the latency, lower quality.
    let mut c = [priced("cheap", 1.0), priced("premium", 10.0)];
    (c[0].quality, c[0].recent.latency_p50_ms) = (0.6, 200.0);
    c[1].recent.latency_p50_ms = 100.0;
    for (priority, first) in [
        (TaskPriority::Low, 0),
        (TaskPriority::Normal, 0),
        (TaskPriority::High, 1),
        (TaskPriority::Critical, 1),
    ] {
        let ranking = rank(&with_priority(priority), &c, &Config::default());
        assert_eq!(ranking.order[0], first, "{priority:?}");
        assert_eq!(ranking.high, first == 1);
    }
    // The high set is configurable: make price count again.
    let (config, _) = Config::parse(r#"{"high_weights": {"cost": 0.9}}"#);
    let ranking = rank(&with_priority(TaskPriority::Critical), &c, &config);
    assert_eq!(ranking.order, vec![0, 1]);
}

#[test]
fn ties_keep_the_configured_order() {
    let c = [priced("a", 1.0), priced("b", 1.0), priced("c", 1.0)];
    assert_eq!(
        rank(&request(5, None), &c, &Config::default()).order,
        vec![0, 1, 2]
    );
}

#[test]
fn unhealthy_and_exhausted_go_last_however_well_they_score() {
    let mut c = [
        priced("down-cheap", 0.1),
        priced("ok", 5.0),
        priced("dry-cheap", 0.1),
        priced("nan-headroom", 0.1),
        priced("down-and-dry", 0.1),
    ];
    c[0].healthy = false;
    c[2].headroom = 0.0;
    c[3].headroom = f32::NAN;
    (c[4].healthy, c[4].headroom) = (false, -1.0);
    let ranking = rank(&request(100, None), &c, &Config::default());
    assert_eq!(ranking.order, vec![1, 2, 3, 0, 4]);
    assert_eq!(ranking.entries[0].parts.availability, 0.0);
}

#[test]
fn broken_figures_never_look_best() {
    let mut c = [candidate("sane"), candidate("nan")];
    c[0].input_cost_per_1m = 1.0;
    c[0].recent.latency_p50_ms = 300.0;
    let n = &mut c[1];
    (n.quality, n.error_rate, n.input_cost_per_1m) = (f32::NAN, f32::NAN, f64::NAN);
    (n.recent.latency_p50_ms, n.recent.output_tokens_per_second) = (f32::NAN, f32::INFINITY);
    let ranking = rank(&request(100, None), &c, &Config::default());
    assert_eq!(ranking.order, vec![0, 1]);
    assert_parts(
        ranking.entries[1].parts,
        [0.5, 0.0, UNKNOWN_PERFORMANCE, 0.0],
    );
}

#[test]
fn every_index_exactly_once_and_scores_in_range() {
    for config in [
        Config::default(),
        Config::parse(r#"{"weights": {"cost": 0}}"#).0,
    ] {
        for_random_sets(|r, c| {
            let ranking = rank(r, c, &config);
            assert_permutation(&ranking.order, c.len());
            for e in &ranking.entries {
                assert!((0.0..=1.0 + 1e-9).contains(&e.score), "{e:?}");
            }
        });
    }
    assert!(
        rank(&request(1, None), &[], &Config::default())
            .order
            .is_empty()
    );
}
