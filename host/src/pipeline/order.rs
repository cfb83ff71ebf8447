//! Step 3: which deployments a request may use, and in what order — the
//! budgets it falls under (admission), then the route's strategy, the
//! capabilities the request needs, and the deployments' health. (What
//! each candidate needs before it is sent is in `limits.rs`.)

use std::sync::Arc;

use super::outcome::{self, Recorder};
use super::request::{ChatRequestView, validate_order};
use super::{Deployment, Gateway, Member, Route};
use crate::domain::{Candidate, Capabilities, Kind, RequestSummary};
use crate::error::ApiError;
use crate::monitor::Monitor;
use std::sync::atomic::Ordering::Relaxed;

/// The most completion tokens a request's cost estimate assumes.
const MAX_ESTIMATED_COMPLETION: u32 = 16_384;

impl Gateway {
    /// Budgets: reserves the request's estimated cost on every budget it
    /// falls under (the prompt's length and `max_tokens`, 512 when unset, at
    /// the highest prices of the routes it may use), or refuses it.
    pub(super) fn admit(
        &self,
        chain: &[(&Route, Option<&str>)],
        view: &ChatRequestView<'_>,
        text: &str,
        rec: &mut Recorder,
    ) -> Result<(), ApiError> {
        let sinks = rec.sinks().clone();
        if sinks.budgets.is_empty() {
            return Ok(());
        }
        let Some(r) = rec.record() else {
            return Ok(());
        };
        let (mut input, mut output) = (0f64, 0f64);
        for m in chain.iter().flat_map(|(route, _)| &route.members) {
            input = input.max(m.deployment.prices.input);
            output = output.max(m.deployment.prices.output);
        }
        let prompt = outcome::estimate_tokens(outcome::content_chars(text));
        // Capped: a caller's huge max_tokens must not hold a budget for everyone.
        let completion = view
            .output_limit()
            .unwrap_or(512)
            .min(MAX_ESTIMATED_COMPLETION);
        let estimate = (f64::from(prompt) * input + f64::from(completion) * output) / 1e6;
        let subject = crate::budget::Subject {
            route: &r.route,
            caller: r.caller.as_deref(),
            tags: &r.tags,
        };
        let now = outcome::now_ms();
        match sinks.budgets.admit(&subject, estimate, now) {
            Ok(reservation) => {
                r.reservation = Some(reservation);
                Ok(())
            }
            Err(e) => {
                tracing::info!(request_id = %r.request_id, budget = %e.budget, "budget spent: request refused");
                Err(budget_refusal(e, now))
            }
        }
    }

    /// The strategy's order, validated; the configured order when the route
    /// has no strategy or the strategy fails. Deployments cooling down are
    /// in it: the caller skips them (see `DeploymentHealth::admission`).
    ///
    /// A deployment configured without a capability the request needs
    /// (tools, vision, streaming; JSON mode for a stream) or with a context
    /// window shorter than the prompt is never tried, so the strategy
    /// never sees it: it orders only what the host would try, and scores
    /// (costs, latencies) are compared among those.
    pub(super) async fn order(
        &self,
        route: &Route,
        summary: &RequestSummary,
        request_id: &Arc<str>,
        rec: &mut Recorder,
    ) -> Vec<usize> {
        // JSON asked for whole is had from any model (see `structured`).
        let needs = if summary.stream {
            summary.needs
        } else {
            summary.needs.without(Capabilities::JSON_MODE)
        };
        let mut eligible: Vec<usize> = (0..route.members.len())
            .filter(|&i| route.members[i].deployment.supports.contains(needs))
            .collect();
        // A prompt longer than a deployment's context window (by the
        // estimate strategies see) is not sent there — unless that leaves
        // none, when the upstreams say (and `too_long_for` learns).
        if eligible.iter().any(|&i| {
            route.members[i]
                .deployment
                .context_window
                .is_some_and(|w| summary.input_tokens > w)
        }) {
            let fits: Vec<usize> = eligible
                .iter()
                .copied()
                .filter(|&i| {
                    route.members[i]
                        .deployment
                        .context_window
                        .is_none_or(|w| summary.input_tokens <= w)
                })
                .collect();
            if !fits.is_empty() {
                eligible = fits;
            }
        }
        let shadowed =
            !route.shadows.is_empty() && rec.record().is_some_and(|r| r.shadow.is_none());
        if (route.strategy.is_none() && !shadowed) || eligible.is_empty() {
            self.shadow(route, summary, Vec::new(), &eligible, shadowed, rec);
            return eligible;
        }
        let monitor = &rec.sinks().monitor;
        let candidates: Vec<Candidate> = eligible
            .iter()
            .map(|&i| candidate(&route.members[i], monitor, self.shared.as_deref()))
            .collect();
        let Some(id) = &route.strategy else {
            self.shadow(route, summary, candidates, &eligible, shadowed, rec);
            return eligible;
        };
        // The shadows see what the live strategy saw.
        let kept = shadowed.then(|| candidates.clone());
        let ordered = match self.registry.get(id, Kind::Strategy) {
            Ok(plugin) => plugin
                .order(request_id, summary.clone(), candidates)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
        .and_then(|order| validate_order(order, eligible.len()));
        let order = match ordered {
            Ok(order) => order.into_iter().map(|i| eligible[i]).collect(),
            Err(e) => {
                tracing::warn!(request_id = %request_id, model = %route.name, plugin = %id, "strategy failed, using the configured order: {e}");
                eligible.clone()
            }
        };
        if let Some(candidates) = kept {
            self.shadow(route, summary, candidates, &order, true, rec);
        }
        order
    }

    /// Keeps what the route's shadow strategies need for after the answer:
    /// once per request, for the first route of its chain that has shadows
    /// (a fallback's, when the requested route has none).
    fn shadow(
        &self,
        route: &Route,
        summary: &RequestSummary,
        candidates: Vec<Candidate>,
        order: &[usize],
        shadowed: bool,
        rec: &mut Recorder,
    ) {
        if !shadowed {
            return;
        }
        if let Some(r) = rec.record() {
            r.shadow = Some(Box::new(crate::shadow::Pending {
                registry: self.registry.clone(),
                route: route.name.clone(),
                live_strategy: route.strategy.clone(),
                strategies: route.shadows.clone(),
                summary: summary.clone(),
                candidates,
                live_choice: order
                    .first()
                    .map(|&i| route.members[i].deployment.name.clone()),
            }));
        }
    }
}

/// A deployment's windows' headroom: the last shared answer with Redis, the
/// local windows otherwise.
fn limiter_headroom(d: &Deployment, shared: Option<&crate::ratelimit::shared::Shared>) -> f32 {
    match shared {
        Some(s) if d.limited && !s.is_degraded() => {
            let h = f32::from_bits(d.shared_headroom.load(Relaxed));
            let refused_until = d.shared_refused_until_ms.load(Relaxed);
            if h == 0.0 && (outcome::now_ms().max(0) as u64) >= refused_until {
                1.0
            } else {
                h
            }
        }
        _ => d.limiter.headroom(),
    }
}

fn candidate(
    m: &Member,
    monitor: &Monitor,
    shared: Option<&crate::ratelimit::shared::Shared>,
) -> Candidate {
    let d = &m.deployment;
    let h = d.health.snapshot();
    Candidate {
        deployment: d.name.clone(),
        adapter: d.adapter.clone(),
        healthy: h.healthy,
        // The tightest of a rate-limit cool-down, the deployment's windows
        // and its keys' (the best key's: a request needs one).
        headroom: h
            .headroom
            .min(limiter_headroom(d, shared))
            .min(d.keys.headroom()),
        in_flight: h.in_flight,
        error_rate: h.error_rate,
        latency_ms: h.latency_ms,
        input_cost_per_1m: d.prices.input,
        output_cost_per_1m: d.prices.output,
        cached_input_cost_per_1m: d.prices.cached_input,
        priority: m.priority,
        weight: m.weight,
        quality: h.quality,
        supports: d.supports,
        recent: monitor.recent(&d.name),
    }
}

/// The 429 for a request a spent budget refuses, at `now` (ms): retry
/// when the budget's window ends.
pub(super) fn budget_refusal(e: crate::budget::Exceeded, now: i64) -> ApiError {
    let end = crate::budget::window_end(e.period, now);
    ApiError::BudgetExceeded {
        budget: e.budget,
        spent: e.spent,
        limit: e.limit,
        period: match e.period {
            crate::config::BudgetPeriod::Day => "day",
            crate::config::BudgetPeriod::Month => "month",
        },
        retry_after_s: ((end - now).max(1000) as u64).div_ceil(1000),
    }
}

/// Deployments a spent budget takes out: those of a spent deployment
/// budget (each noted on `held` with [`Reservation::left_out`], so that a
/// request nothing else serves is refused naming the budget), and all but
/// the cheapest when a `cheapest` budget is spent.
///
/// [`Reservation::left_out`]: crate::budget::Reservation::left_out
pub(super) fn budget_filter(
    route: &Route,
    held: &mut crate::budget::Reservation,
    order: &mut Vec<usize>,
) {
    if !held.spent_deployment_budgets.is_empty() {
        let now = outcome::now_ms();
        order.retain(|&i| {
            let name = &route.members[i].deployment.name;
            let blocked = held.blocks(name);
            if blocked {
                held.left_out(name, now);
            }
            !blocked
        });
    }
    if held.cheapest_only {
        let price = |i: usize| {
            let p = route.members[i].deployment.prices;
            p.input + p.output
        };
        let cheapest = order
            .iter()
            .map(|&i| price(i))
            .fold(f64::INFINITY, f64::min);
        order.retain(|&i| price(i) <= cheapest);
    }
}
