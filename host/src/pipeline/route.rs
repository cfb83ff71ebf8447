//! Step 4 for one route: its order, then each candidate in turn — held
//! back (limits, keys, caps) or sent, and what a failure means for the key
//! and the deployment.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::limits::NotSent;
use super::outcome::{self, Recorder};
use super::{Answer, Gateway, Mode, Route, Served, Tried, order};
use crate::config::OnContentFilter;
use crate::domain::{RequestSummary, Target};
use crate::error::ApiError;
use crate::failover::{Attempt, FailureClass, Next};
use crate::health::Admission;

impl Gateway {
    /// Steps 3 and 4 for one route: its order, then each candidate in turn.
    /// `None` when all failed (their attempts are in `attempts`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve_route(
        &self,
        route: &Route,
        rest: Option<&str>,
        summary: &RequestSummary,
        request: &Arc<str>,
        mode: Mode<'_>,
        request_id: &Arc<str>,
        attempts: &mut Vec<crate::failover::Attempt>,
        tried: &mut Tried,
        begun: Instant,
        rec: &mut Recorder,
    ) -> Result<Option<Served>, ApiError> {
        // 3. The order to try its deployments in.
        let mut order = self.order(route, summary, request_id, rec).await;
        if let Some(held) = rec.record().and_then(|r| r.reservation.as_mut()) {
            order::budget_filter(route, held, &mut order);
        }
        // 4. Each candidate in turn. The request text is shared by every
        // plugin call of this request (calls may run on other threads).
        for index in order {
            let deployment = &route.members[index].deployment;
            let target = match rest {
                Some(rest) if deployment.target.model.contains('*') => Arc::new(Target {
                    deployment: deployment.name.clone(),
                    model: deployment.target.model.replace('*', rest),
                }),
                _ => deployment.target.clone(),
            };
            // Once per deployment and upstream model (a wildcard deployment
            // serves several).
            if tried
                .targets
                .iter()
                .any(|t| t.deployment == target.deployment && t.model == target.model)
                || tried.unsupported_adapters.contains(&deployment.adapter)
            {
                continue;
            }
            // A resumed stream does not go back to a deployment whose
            // stream failed in this request.
            if let Mode::Resume { leg, .. } = mode
                && leg.failed.contains(&deployment.name)
            {
                continue;
            }
            tried.targets.push(target.clone());
            // A smaller (or equal) context window than one that already
            // refused the request as too long cannot serve it.
            if let (Some((window, who)), Some(mine)) =
                (&tried.too_long_for, deployment.context_window)
                && mine <= *window
            {
                attempts.push(Attempt::held_back(
                    &deployment.name,
                    FailureClass::ContextLengthExceeded,
                    format!("not sent: its context_window ({mine}) is no larger than that of {who} ({window}), which refused the request as too long"),
                    None,
                ));
                continue;
            }
            // Cooling down, or its half-open circuit probed by another
            // request: not sent (the request may wait for it, or gets a
            // 503/429 with Retry-After when nothing else serves it).
            let probe = match deployment.health.admission() {
                Admission::Closed => None,
                Admission::HalfOpen => match deployment.health.try_probe() {
                    Some(probe) => Some(Arc::new(probe)),
                    None => {
                        attempts.push(circuit_held(deployment, None, false));
                        continue;
                    }
                },
                Admission::Open { left, rate_limited } => {
                    attempts.push(circuit_held(deployment, Some(left), rate_limited));
                    continue;
                }
            };
            // Each key of its pool at most once, when a key (not the
            // deployment) was refused.
            let mut key_tries = 1;
            // Retries of this deployment after faults, and whether a short
            // Retry-After was waited out already.
            let mut retried = 0;
            let mut waited_out = false;
            // Whether its answer was sent back once for correction (JSON
            // asked for).
            let mut corrected = false;
            // A correction left over from another deployment (its retry was
            // held back) is not this one's to send.
            if let Mode::Complete(Some(plan)) = mode {
                plan.take_repair();
            }
            // A resumed stream's leg: the delivered text as a prefill where
            // the deployment continues one (until it refuses it).
            let mut prefill = matches!(mode, Mode::Resume { .. }) && self.prefills(deployment);
            loop {
                let (mode, request) = match mode {
                    Mode::Resume { leg, .. } => (
                        Mode::Resume { leg, prefill },
                        if prefill {
                            &leg.prefilled
                        } else {
                            &leg.original
                        },
                    ),
                    mode => (mode, request),
                };
                // At one of its rate limits, or no key it could send with: not
                // tried (the upstream would refuse).
                let held = match self.reserve(deployment, summary, request_id, rec).await {
                    Ok(held) => held,
                    Err(NotSent::Attempt(refused)) => {
                        attempts.push(refused);
                        break;
                    }
                    Err(NotSent::Caller(e)) => return Err(e),
                };
                let shared_probe = held.probe;
                let mut record = outcome::AttemptRecord::new(
                    &deployment.name,
                    &deployment.adapter,
                    deployment.prices,
                );
                record.limits = held.limits;
                record.probe = probe.clone();
                record.slot = held.slot.map(Arc::new);
                record.span = crate::telemetry::attempt_span(
                    &deployment.name,
                    &deployment.adapter,
                    &target.model,
                );
                rec.open_attempt(&record);
                let key = held.key;
                let span = record.span.clone();
                let result = self
                    .attempt(
                        route,
                        deployment,
                        &key,
                        &target,
                        request,
                        mode,
                        request_id,
                        &mut record,
                        rec,
                    )
                    .instrument(span)
                    .await;
                match result {
                    Ok(answer) => {
                        let was_cooling = deployment.health.is_cooling_down();
                        let ms = record.started.elapsed().as_millis() as u64;
                        if let Served::Answer(Answer::Complete { .. }, _) = &answer {
                            rec.end_attempt(&deployment.health, record, None);
                        } // A committed stream: its pump ends the attempt.
                        // A probe that closed the circuit closes it everywhere.
                        if let Some(shared) = &self.shared
                            && (shared_probe || was_cooling && !deployment.health.is_cooling_down())
                        {
                            shared.clear_cooldown("d", &deployment.name, "circuit");
                        }
                        tracing::info!(
                            request_id = %request_id,
                            model = %route.name,
                            deployment = %deployment.name,
                            attempts = attempts.len() + 1,
                            ms,
                            total_ms = begun.elapsed().as_millis() as u64,
                            "answered"
                        );
                        return Ok(Some(answer.with_attempts(attempts.len() + 1)));
                    }
                    Err(mut attempt) => {
                        tracing::warn!(
                            request_id = %request_id,
                            model = %route.name,
                            deployment = %attempt.deployment,
                            class = ?attempt.class,
                            status = attempt.status,
                            "attempt failed: {}",
                            attempt.message
                        );
                        record.class = Some(attempt.class);
                        // The upstream's status, when one came before the
                        // failure (a body that stalled after a 200).
                        record.status = attempt.status.or(record.status);
                        let verdict =
                            self.key_failed(deployment, &key, &mut attempt, request_id, rec);
                        let was_cooling = deployment.health.is_cooling_down();
                        rec.end_attempt(&deployment.health, record, verdict.cool);
                        // A circuit that opened here opens for every replica
                        // (a 429's cool-down travels as its key's).
                        if let Some(shared) = &self.shared
                            && !was_cooling
                            && attempt.class != FailureClass::RateLimited
                            && let Some(left) = deployment.health.cooling_for()
                        {
                            shared.publish_cooldown("d", &deployment.name, "circuit", left);
                        } else if let Some(shared) = &self.shared
                            && shared_probe
                            && attempt.class.is_deployment_fault()
                        {
                            // The probe for every replica failed: the circuit
                            // reopens everywhere, here too.
                            let open = deployment.health.trip_cooldown();
                            deployment.health.adopt_cooldown(open);
                            shared.publish_cooldown("d", &deployment.name, "circuit", open);
                        }
                        // A deployment that will not continue the delivered
                        // text regenerates the answer instead.
                        if prefill
                            && matches!(
                                attempt.class,
                                FailureClass::InvalidRequest
                                    | FailureClass::Unsupported
                                    | FailureClass::ContextLengthExceeded
                            )
                        {
                            tracing::info!(request_id = %request_id, model = %route.name,
                                deployment = %deployment.name,
                                "the deployment refused the prefill; regenerating the answer instead");
                            prefill = false;
                            attempts.push(attempt);
                            continue;
                        }
                        // Not the JSON asked for: this deployment once more,
                        // told what was wrong (the correction is ready).
                        if attempt.class == FailureClass::InvalidOutput {
                            let plan = match mode {
                                Mode::Complete(Some(plan)) => Some(plan),
                                _ => None,
                            };
                            if !corrected && plan.is_some() {
                                corrected = true;
                                attempts.push(attempt);
                                continue;
                            }
                            // Corrected once already: the next candidate
                            // starts afresh.
                            plan.map(|p| p.take_repair());
                        }
                        // The key, not the deployment, was refused: the same
                        // deployment again with another key of its pool.
                        if verdict.other_key && key_tries < deployment.keys.keys().len() {
                            key_tries += 1;
                            attempts.push(attempt);
                            continue;
                        }
                        // The same deployment again, after a back-off or a
                        // short Retry-After, while its circuit stays closed.
                        if let Some(wait) = retry_wait(&route.retry, &attempt, retried, waited_out)
                            // Not once the failures tripped its circuit.
                            && (attempt.class == FailureClass::RateLimited
                                || deployment.health.admission() == Admission::Closed)
                        {
                            // The others first; this one again after its
                            // Retry-After only if none of them serves.
                            if attempt.class == FailureClass::RateLimited
                                && route.retry.others_first
                                && !tried.came_back
                                && tried.come_back.is_none()
                            {
                                tracing::info!(request_id = %request_id, model = %route.name,
                                    deployment = %deployment.name, wait_ms = wait.as_millis() as u64,
                                    "trying the other candidates during its Retry-After");
                                tried.come_back = Some((
                                    tried.route_index,
                                    target.clone(),
                                    Instant::now() + wait,
                                ));
                                attempts.push(attempt);
                                break;
                            }
                            if attempt.class == FailureClass::RateLimited {
                                waited_out = true;
                            } else {
                                retried += 1;
                            }
                            tracing::info!(request_id = %request_id, model = %route.name,
                                deployment = %deployment.name, class = attempt.class.name(),
                                wait_ms = wait.as_millis() as u64, "retrying the same deployment");
                            attempts.push(attempt);
                            tokio::time::sleep(wait).await;
                            if deployment.health.admission() == Admission::Closed {
                                continue;
                            }
                            break;
                        }
                        if attempt.class == FailureClass::Unsupported {
                            // Same dialect, same verdict: only deployments
                            // behind other adapters are still worth a try.
                            tried.unsupported_adapters.push(deployment.adapter.clone());
                        }
                        if attempt.class == FailureClass::ContextLengthExceeded
                            && let Some(window) = deployment.context_window
                            && tried.too_long_for.as_ref().is_none_or(|(w, _)| window > *w)
                        {
                            tried.too_long_for = Some((window, deployment.name.clone()));
                        }
                        // A policy refusal is the answer (unless the route
                        // says another model may try).
                        // (A resumed stream's request was accepted once: a
                        // refusal now speaks of this deployment, and the
                        // next one is tried.)
                        let resuming = matches!(mode, Mode::Resume { .. });
                        if attempt.class == FailureClass::ContentFiltered
                            && route.on_content_filter == OnContentFilter::Return
                            && !resuming
                        {
                            return Err(ApiError::ContentFiltered {
                                deployment: attempt.deployment,
                                message: attempt.message,
                            });
                        }
                        if attempt.class.next() == Next::ReturnToCaller && !resuming {
                            return Err(ApiError::UpstreamRejected {
                                deployment: attempt.deployment,
                                message: attempt.message,
                            });
                        }
                        attempts.push(attempt);
                        break;
                    }
                }
            }
        }
        Ok(None)
    }

    /// One pass over the request's route and its fallbacks, in order: the
    /// answer, or every attempt made (or held back) on the way.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve_chain(
        &self,
        chain: &[(&Route, Option<&str>)],
        summary: &RequestSummary,
        request: &Arc<str>,
        mode: Mode<'_>,
        request_id: &Arc<str>,
        begun: Instant,
        rec: &mut Recorder,
    ) -> Result<Result<Served, Vec<Attempt>>, ApiError> {
        let mut attempts = Vec::new();
        // Across the whole chain: a deployment listed by two routes is
        // tried once, an adapter that cannot send the request is not
        // asked again.
        let mut tried = Tried::default();
        // Which spent budgets left deployments out: this pass's, not an
        // earlier pass's (a queue wait, a resumed stream's leg).
        if let Some(held) = rec.record().and_then(|r| r.reservation.as_mut()) {
            held.refusal = None;
        }
        for (n, &(route, rest)) in chain.iter().enumerate() {
            if n > 0 {
                // Only what another model may fix: not a gateway that is
                // saturated (the caller gets its 503 and Retry-After).
                if !attempts.is_empty()
                    && attempts
                        .iter()
                        .all(|a: &Attempt| a.class == FailureClass::GatewaySaturated)
                {
                    break;
                }
                tracing::info!(request_id = %request_id, model = %chain[0].0.name,
                    fallback = %route.name, "falling back to another route");
                // A fallback route's own cap, held until the record
                // completes (a resumed stream holds it already, or never
                // needed it).
                if let Some(max) = route
                    .max_in_flight
                    .filter(|_| !matches!(mode, Mode::Resume { .. }))
                {
                    match route.gauge.try_acquire(max) {
                        Some(slot) => {
                            if let Some(r) = rec.record() {
                                r.slots.push(slot);
                            }
                        }
                        None => {
                            attempts.push(Attempt::held_back(
                                &route.name,
                                FailureClass::AtCapacity,
                                format!(
                                    "fallback model {:?} is at its max_in_flight ({max})",
                                    route.name
                                ),
                                None,
                            ));
                            continue;
                        }
                    }
                }
            }
            tried.route_index = n;
            if let Some(answer) = self
                .serve_route(
                    route,
                    rest,
                    summary,
                    request,
                    mode,
                    request_id,
                    &mut attempts,
                    &mut tried,
                    begun,
                    rec,
                )
                .await?
            {
                return Ok(Ok(answer));
            }
        }
        // Nothing else served it: back to the deployment whose short
        // Retry-After it did not wait out, once that has passed.
        if let Some((n, target, at)) = tried.come_back.take() {
            tried.came_back = true;
            tried.route_index = n;
            tried.targets.retain(|t| !Arc::ptr_eq(t, &target));
            tokio::time::sleep_until(at.into()).await;
            let (route, rest) = chain[n];
            if let Some(answer) = self
                .serve_route(
                    route,
                    rest,
                    summary,
                    request,
                    mode,
                    request_id,
                    &mut attempts,
                    &mut tried,
                    begun,
                    rec,
                )
                .await?
            {
                return Ok(Ok(answer));
            }
        }
        Ok(Err(attempts))
    }
}

/// A deployment not sent the request because it cools down (`left`) or its
/// half-open circuit is probed by another request (`None`).
fn circuit_held(
    d: &super::Deployment,
    left: Option<std::time::Duration>,
    rate_limited: bool,
) -> Attempt {
    let ms = left
        .unwrap_or_else(|| d.health.probe_window())
        .as_millis()
        .max(1) as u64;
    let (class, why) = if rate_limited {
        (FailureClass::RateLimited, "it cools down after a 429")
    } else if left.is_some() {
        (FailureClass::CircuitOpen, "its circuit is open")
    } else {
        (
            FailureClass::CircuitOpen,
            "another request probes its half-open circuit",
        )
    };
    Attempt::held_back(
        &d.name,
        class,
        format!("{why}; not sent, may be tried again in {ms} ms"),
        Some(ms),
    )
}

/// How long to wait before sending a failed attempt to the same deployment
/// again, if at all (the route's `retry`):
/// - a 5xx, an overload, a refused or reset connection: up to `retries`
///   times, after a random wait up to `backoff_ms × factor^n` (full jitter:
///   retries of many requests do not arrive together);
/// - a 429 whose Retry-After is at most `max_retry_after_ms`: once, after
///   it (the deployment cools down until then);
/// - anything else (a first-byte timeout, a content or caller problem): no.
fn retry_wait(
    policy: &crate::config::RetryPolicy,
    attempt: &Attempt,
    retried: u32,
    waited_out: bool,
) -> Option<std::time::Duration> {
    match attempt.class {
        FailureClass::Overloaded | FailureClass::Connect | FailureClass::Transport
            if retried < policy.retries.min(3) && !attempt.held_back =>
        {
            let cap = policy.backoff_ms as f64 * policy.factor.max(1.0).powi(retried as i32);
            let mut bytes = [0u8; 4];
            let _ = getrandom::fill(&mut bytes);
            let share = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX);
            Some(std::time::Duration::from_millis((cap * share) as u64))
        }
        FailureClass::RateLimited if !waited_out && attempt.status.is_some() => attempt
            .retry_after_ms
            .filter(|&ms| ms <= policy.max_retry_after_ms)
            .map(std::time::Duration::from_millis),
        _ => None,
    }
}
