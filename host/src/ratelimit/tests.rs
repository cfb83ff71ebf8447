use super::*;

fn limiter(limits: Limits) -> Limiter {
    Limiter::new(limits, 0.9)
}

#[test]
fn a_steady_load_gets_the_limit_and_no_more() {
    // 1 request every 10 ms for 10 s against 600 rpm (10 a second).
    let l = limiter(Limits {
        rpm: Some(600),
        ..Limits::default()
    });
    let mut admitted = Vec::new();
    let mut events = Vec::new();
    for i in 0..1_000u64 {
        let us = (i * 10 + 60_000) * 1_000;
        if l.reserve_at(us, 0, &mut events).is_ok() {
            admitted.push(us);
        }
    }
    // Never more than 600 in any 60 s window…
    for (i, t) in admitted.iter().enumerate() {
        let in_window = admitted[..=i]
            .iter()
            .filter(|&&u| u + 60_000_000 > *t)
            .count();
        assert!(in_window <= 600, "{in_window} at {t}");
    }
    // …and the whole limit in the first one.
    assert_eq!(admitted.len(), 600);
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        ["rate_limit_warning", "rate_limit_reached"],
        "each once per window"
    );
}

#[test]
fn bursts_never_exceed_the_limit_in_any_window() {
    // Bursts of 50 every 137 ms for 10 s against 20 a second.
    let l = limiter(Limits {
        rps: Some(20),
        ..Limits::default()
    });
    let mut events = Vec::new();
    let mut admitted = Vec::new();
    for burst in 0..73u64 {
        let us = 3_000_000 + burst * 137_000;
        for i in 0..50 {
            if l.reserve_at(us + i * 10, 0, &mut events).is_ok() {
                admitted.push(us + i * 10);
            }
        }
    }
    for (i, t) in admitted.iter().enumerate() {
        let in_window = admitted[..=i]
            .iter()
            .filter(|&&u| u + 1_000_000 > *t)
            .count();
        assert!(in_window <= 20, "{in_window} in the second before {t}");
    }
    // 10 s: at least 95 % of 200.
    assert!((190..=200).contains(&admitted.len()), "{}", admitted.len());
}

#[test]
fn after_a_burst_the_window_slides_bucket_by_bucket() {
    let l = limiter(Limits {
        rps: Some(60),
        ..Limits::default()
    });
    let mut events = Vec::new();
    for _ in 0..60 {
        l.reserve_at(5_000_000, 0, &mut events).unwrap();
    }
    let refused = l.reserve_at(5_500_000, 0, &mut events).unwrap_err();
    assert_eq!(refused.limit, Kind::Rps);
    // The burst's bucket leaves the window a second after it began.
    assert!(
        (490..=520).contains(&(refused.retry_after.as_millis() as u64)),
        "{refused:?}"
    );
    assert!(l.reserve_at(6_016_000, 0, &mut events).is_ok());
}

#[test]
fn tokens_are_reconciled_with_the_real_usage() {
    let l = limiter(Limits {
        tpm: Some(1_000),
        ..Limits::default()
    });
    let mut events = Vec::new();
    let r = l.reserve_at(0, 600, &mut events).unwrap();
    assert!(
        l.reserve_at(0, 600, &mut events).is_err(),
        "600 + 600 > 1000"
    );
    // It used 100: 500 come back.
    l.reconcile(&r, 100);
    assert_eq!(l.usage(), [(Kind::Tpm, 1_000, 100)]);
    let r2 = l.reserve_at(0, 600, &mut events).unwrap();
    // Far above its estimate: the window is over its limit until it slides.
    l.reconcile(&r2, 5_000);
    assert!(l.reserve_at(2_000_000, 1, &mut events).is_err());
    assert!(l.headroom() == 0.0);
}

#[test]
fn a_request_larger_than_the_limit_waits_for_an_empty_window() {
    let l = limiter(Limits {
        tpm: Some(100),
        ..Limits::default()
    });
    let mut events = Vec::new();
    l.reserve_at(0, 5_000, &mut events).unwrap();
    assert!(l.reserve_at(30_000_000, 5_000, &mut events).is_err());
    assert!(l.reserve_at(61_000_000, 5_000, &mut events).is_ok());
}

#[test]
fn reloading_keeps_unchanged_windows() {
    let l = limiter(Limits {
        rpm: Some(10),
        tpm: Some(1_000),
        ..Limits::default()
    });
    let mut events = Vec::new();
    l.try_reserve(100, &mut events).unwrap();
    l.set(
        Limits {
            rpm: Some(10),
            tpm: Some(2_000),
            ..Limits::default()
        },
        0.9,
    );
    assert_eq!(
        l.usage(),
        [(Kind::Rpm, 10, 1), (Kind::Tpm, 2_000, 0)],
        "the rpm window kept, the changed tpm window anew"
    );
}

#[test]
fn a_released_reservation_gives_its_request_and_tokens_back() {
    let l = limiter(Limits {
        rpm: Some(2),
        tpm: Some(1_000),
        ..Limits::default()
    });
    let mut events = Vec::new();
    let r = l.reserve_at(1_000, 400, &mut events).unwrap();
    l.reserve_at(2_000, 400, &mut events).unwrap();
    assert!(
        l.reserve_at(3_000, 100, &mut events).is_err(),
        "rpm 2 spent"
    );
    l.release(&r);
    assert_eq!(l.usage(), [(Kind::Rpm, 2, 1), (Kind::Tpm, 1_000, 400)]);
    assert!(l.reserve_at(4_000, 100, &mut events).is_ok());
}

#[test]
fn the_providers_quota_tightens_the_limiter_until_its_reset() {
    use crate::domain::QuotaHint;
    let l = limiter(Limits::default());
    assert!(!l.is_active(), "nothing to limit: no lock taken");
    let mut events = Vec::new();
    l.learn_at(
        1_000_000,
        &QuotaHint {
            limit_requests: Some(100),
            remaining_requests: Some(2),
            reset_requests_ms: Some(3_000),
            ..QuotaHint::default()
        },
        60_000,
    );
    assert!(l.is_active());
    // Two left: two go, the third waits for the reset.
    assert!(l.reserve_at(1_100_000, 10, &mut events).is_ok());
    assert!(l.reserve_at(1_200_000, 10, &mut events).is_ok());
    let refused = l.reserve_at(1_300_000, 10, &mut events).unwrap_err();
    assert_eq!(refused.limit, Kind::ProviderRequests);
    assert_eq!(refused.retry_after, Duration::from_millis(2_700));
    // After the reset the provider's figure is forgotten.
    assert!(l.reserve_at(4_000_001, 10, &mut events).is_ok());
    assert!(!l.is_active());

    // Tokens: a request needing more than is left waits…
    l.learn_at(
        5_000_000,
        &QuotaHint {
            limit_tokens: Some(10_000),
            remaining_tokens: Some(500),
            reset_tokens_ms: Some(6_000),
            ..QuotaHint::default()
        },
        60_000,
    );
    assert_eq!(
        l.reserve_at(5_000_001, 600, &mut events).unwrap_err().limit,
        Kind::ProviderTokens
    );
    assert!(l.reserve_at(5_000_002, 400, &mut events).is_ok());
    assert!(
        l.reserve_at(5_000_003, 200, &mut events).is_err(),
        "100 left"
    );
    assert!(events.is_empty(), "provider figures raise no window events");
}

#[test]
fn a_providers_far_reset_is_capped() {
    use crate::domain::QuotaHint;
    let l = limiter(Limits::default());
    let mut events = Vec::new();
    l.learn_at(
        0,
        &QuotaHint {
            remaining_requests: Some(0),
            reset_requests_ms: Some(6 * 3_600_000),
            ..QuotaHint::default()
        },
        60_000,
    );
    let refused = l.reserve_at(1_000, 1, &mut events).unwrap_err();
    assert!(
        refused.retry_after <= Duration::from_secs(60),
        "{refused:?}"
    );
    assert!(l.reserve_at(60_000_001, 1, &mut events).is_ok());
}
