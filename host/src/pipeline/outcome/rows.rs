//! A finished record as the store keeps it: a request row and its attempts' rows.

use std::time::Duration;

use super::{End, Record};
use crate::domain::{Usage, Verdict};
use crate::store::{AttemptRow, QualityRow, RequestRow};

/// The store's rows for a finished record, the last use of it: its texts
/// are moved into the rows, not copied (each copy an allocation and a free
/// on the request's thread).
pub(super) fn rows(r: &mut Record, end: &End) -> (RequestRow, Vec<AttemptRow>) {
    let total = r.begun.elapsed();
    let upstream: Duration = r.attempts.iter().map(|a| a.upstream).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // The caller's usage and cost: the attempt that answered. What failed
    // attempts were billed is in their own rows (and in the cost total).
    let answered = match end {
        End::Answered | End::StreamFailed | End::ClientGone => {
            r.attempts.last().filter(|a| a.class.is_none() || r.stream)
        }
        _ => None,
    };
    // A resumed stream's answer is every leg's: their usage adds up.
    let usage = answered.and_then(|a| a.usage).map(|last| {
        r.attempts
            .iter()
            .filter(|a| a.cut)
            .filter_map(|a| a.usage)
            .fold(last, |sum, u| Usage {
                prompt_tokens: sum.prompt_tokens.saturating_add(u.prompt_tokens),
                completion_tokens: sum.completion_tokens.saturating_add(u.completion_tokens),
                ..sum
            })
    });
    let cost: f64 = r.attempts.iter().filter_map(|a| a.cost).sum();
    let any_cost = r.attempts.iter().any(|a| a.cost.is_some());
    let request = RequestRow {
        id: r.request_id.clone(),
        ts_ms: r.ts_ms,
        route: std::mem::take(&mut r.route),
        caller: r.caller.take(),
        tags: (!r.tags.is_empty()).then(|| r.tags.join(",")),
        stream: r.stream,
        status: end.status(),
        outcome: end.name(),
        deployment: answered
            .map(|a| a.deployment.clone())
            .or_else(|| r.cached.as_ref().map(|(d, _)| d.to_string())),
        attempts: r.attempts.len() as u32,
        latency_ms: ms(total),
        overhead_ms: (!r.attempts.is_empty()).then(|| ms(total.saturating_sub(upstream))),
        ttft_ms: r.ttft.map(ms),
        prompt_tokens: usage.map(|u| u.prompt_tokens),
        completion_tokens: usage.map(|u| u.completion_tokens),
        cost: any_cost.then_some(cost),
        estimated: r.attempts.iter().any(|a| a.estimated),
        // The last attempt's: the answer's, or the last rejection.
        verdict: r
            .attempts
            .last()
            .and_then(|a| a.verdict.as_ref())
            .map(|(_, v)| verdict_json(v)),
        cache: r.cache.map(crate::cache::Status::name),
        saved_usd: r.cached.as_ref().map(|(_, c)| *c),
    };
    let attempts = r
        .attempts
        .iter_mut()
        .enumerate()
        .map(|(n, a)| AttemptRow {
            request_id: request.id.clone(),
            n: n as u32 + 1,
            ts_ms: a.ts_ms,
            deployment: std::mem::take(&mut a.deployment),
            adapter: std::mem::take(&mut a.adapter),
            class: a.class.map(|c| c.name()),
            status: a.status,
            latency_ms: ms(a.latency),
            ttft_ms: a.ttft.map(ms),
            prompt_tokens: a.usage.map(|u| u.prompt_tokens),
            completion_tokens: a.usage.map(|u| u.completion_tokens),
            cost: a.cost,
            billed: a.billed,
            estimated: a.estimated,
            malformed: a.malformed,
            quality: match (&a.verdict, &a.evaluator_failed) {
                (Some((evaluator, v)), _) => Some(QualityRow {
                    evaluator: evaluator.to_string(),
                    score: Some(v.score),
                    pass: Some(v.pass),
                    reasons: (!v.reasons.is_empty())
                        .then(|| serde_json::to_string(&v.reasons).unwrap_or_default()),
                }),
                // No verdict: the evaluator named, no score, why it failed.
                (None, Some((evaluator, why))) => Some(QualityRow {
                    evaluator: evaluator.to_string(),
                    score: None,
                    pass: None,
                    reasons: Some(
                        serde_json::to_string(&[format!("evaluator failed: {why}")])
                            .unwrap_or_default(),
                    ),
                }),
                (None, None) => None,
            },
        })
        .collect();
    (request, attempts)
}

/// A verdict as the store keeps it: `{"pass":…,"reasons":[…],"score":…}`,
/// the text `json!` wrote, without building its tree of values first (a
/// tenth of what recording a request cost the request).
pub(super) fn verdict_json(v: &Verdict) -> String {
    #[derive(serde::Serialize)]
    struct Stored<'a> {
        pass: bool,
        reasons: &'a [String],
        score: f64,
    }
    serde_json::to_string(&Stored {
        pass: v.pass,
        reasons: &v.reasons,
        score: f64::from(v.score),
    })
    .unwrap_or_default()
}
