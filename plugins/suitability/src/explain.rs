//! The debug line that says why the ranking came out as it did.

use std::fmt::Write;

use switchyard_sdk::Candidate;

use crate::score::Ranking;

/// Candidates named in the line; the rest are counted. Host log lines are
/// truncated anyway, and the first few are the ones that get tried.
const MAX_LISTED: usize = 8;

/// One short line, in ranking order: `deployment=score (cap, cost, perf,
/// avail)` with two decimals, and the tier of those not healthy with
/// headroom (`dry`: exhausted, `down`: unhealthy).
pub fn explain(ranking: &Ranking, candidates: &[Candidate]) -> String {
    let mut line = String::with_capacity(32 + 64 * ranking.order.len().min(MAX_LISTED));
    let weights = if ranking.high { "high" } else { "normal" };
    let _ = write!(line, "suitability ({weights} weights):");
    for (n, &i) in ranking.order.iter().take(MAX_LISTED).enumerate() {
        let (c, e) = (&candidates[i as usize], &ranking.entries[i as usize]);
        let p = &e.parts;
        let _ = write!(
            line,
            "{} {}={:.2} (cap {:.2} cost {:.2} perf {:.2} avail {:.2}{})",
            if n == 0 { "" } else { "," },
            c.deployment,
            e.score,
            p.capability,
            p.cost,
            p.performance,
            p.availability,
            match e.tier {
                0 => "",
                1 => ", dry",
                _ => ", down",
            },
        );
    }
    if ranking.order.len() > MAX_LISTED {
        let _ = write!(line, ", +{} more", ranking.order.len() - MAX_LISTED);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::score::rank;
    use switchyard_sdk::testing::*;

    #[test]
    fn one_short_line_in_ranking_order() {
        let mut c = [candidate("a"), candidate("b")];
        c[0].healthy = false;
        c[0].recent.latency_p50_ms = 100.0;
        (c[1].quality, c[1].recent.latency_p50_ms) = (0.9, 400.0);
        c[1].input_cost_per_1m = 2.0;
        let ranking = rank(&request(10, None), &c, &Config::default());
        assert_eq!(
            explain(&ranking, &c),
            "suitability (normal weights): b=0.80 (cap 0.95 cost 1.00 perf 0.25 avail 1.00), \
             a=0.55 (cap 1.00 cost 0.00 perf 1.00 avail 0.00, down)"
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let c: Vec<_> = (0..11).map(|i| candidate(&format!("d{i}"))).collect();
        let mut r = request(10, None);
        r.priority = switchyard_sdk::TaskPriority::Critical;
        let line = explain(&rank(&r, &c, &Config::default()), &c);
        assert!(
            line.starts_with("suitability (high weights): d0="),
            "{line}"
        );
        assert!(line.ends_with(", +3 more"), "{line}");
        assert_eq!(line.matches('=').count(), MAX_LISTED);
    }
}
