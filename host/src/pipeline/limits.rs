//! Before an attempt is sent: the client key's own limits, the
//! deployment's windows (local, or shared through Redis with the cool-downs
//! other replicas saw), a key of its pool and a place under its
//! concurrency cap; after a failed attempt, what it means for the key.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::outcome::{self, Recorder};
use super::request::ChatRequestView;
use super::{Deployment, Gateway};
use crate::domain::RequestSummary;
use crate::error::ApiError;
use crate::failover::{Attempt, FailureClass};
use crate::keys::{NoKey, UpstreamKey};
use crate::ratelimit::Hold;
use crate::ratelimit::shared::{Check, Verdict};

impl Gateway {
    /// A client key's own limits: the tokens a request is estimated to use
    /// (its prompt and `max_tokens`, or `limits.default_output_tokens`).
    pub(super) fn caller_tokens(&self, view: &ChatRequestView<'_>, text: &str) -> u64 {
        let prompt = outcome::estimate_tokens(outcome::content_chars(text));
        let output = view
            .output_limit()
            .unwrap_or(self.config.limits.default_output_tokens);
        u64::from(prompt) + u64::from(output)
    }

    /// A client key's own limits, checked on their own: takes one request
    /// and `tokens` from its windows (reconciled with the real usage when
    /// the record completes), or refuses with a 429. With Redis this is
    /// folded into the request's first deployment check instead (one round
    /// trip): this runs only when Redis is unavailable, or when the request
    /// made no such check.
    pub(super) async fn caller_limits(
        &self,
        caller: &crate::auth::ClientKey,
        tokens: u64,
        rec: &mut Recorder,
    ) -> Result<(), ApiError> {
        if let Some(shared) = &self.shared {
            let checked = shared
                .reserve(Check {
                    scope: "c",
                    name: &caller.name,
                    limits: caller.limits,
                    tokens,
                    cap: None,
                    keys: None,
                    caller: None,
                    probe: None,
                })
                .await;
            match checked.verdict {
                Verdict::Admitted { reservation, .. } => {
                    if let Some(record) = rec.record() {
                        record.caller_limit = Some(Hold::Shared(shared.clone(), reservation));
                    }
                    return Ok(());
                }
                Verdict::Refused(r) | Verdict::CallerRefused(r) => {
                    return Err(caller_refused(caller, r));
                }
                Verdict::AtCapacity(..) | Verdict::KeysBusy(..) => return Ok(()),
                Verdict::Unavailable => {}
            }
        }
        self.caller_limits_here(caller, tokens, rec)
    }

    /// The client key's windows in this replica (its share, with Redis).
    fn caller_limits_here(
        &self,
        caller: &crate::auth::ClientKey,
        tokens: u64,
        rec: &mut Recorder,
    ) -> Result<(), ApiError> {
        let mut events = Vec::new();
        let result = caller.limiter.try_reserve(tokens, &mut events);
        let request_id = rec.record().map(|r| r.request_id.clone());
        for e in events {
            rec.sinks().event(
                e.kind,
                &format!("caller:{}", caller.name),
                serde_json::json!({"limit": e.limit.name(), "used": e.used, "max": e.max,
                    "request_id": request_id.as_deref()}),
            );
        }
        match result {
            Ok(r) => {
                if let Some(record) = rec.record() {
                    record.caller_limit = Some(Hold::Local(caller.limiter.clone(), r));
                }
                Ok(())
            }
            Err(r) => Err(caller_refused(caller, r)),
        }
    }
}

fn caller_refused(caller: &crate::auth::ClientKey, r: crate::ratelimit::Refused) -> ApiError {
    ApiError::CallerRateLimited {
        key: caller.name.to_string(),
        limit: r.limit.name(),
        max: r.max,
        retry_after_ms: r.retry_after.as_millis().max(1) as u64,
    }
}

/// Why an attempt was not sent.
pub(super) enum NotSent {
    /// Held back or refused: the next candidate.
    Attempt(Attempt),
    /// The client key is at its limit: the request ends with a 429.
    Caller(ApiError),
}

impl From<Attempt> for NotSent {
    fn from(a: Attempt) -> Self {
        NotSent::Attempt(a)
    }
}

/// What an attempt holds before it is sent: the key it sends with, and
/// its reservations on the deployment's and the key's limits.
pub(super) struct Held {
    pub key: Arc<UpstreamKey>,
    pub limits: [Option<Hold>; 2],
    /// Its place under the deployment's `max_in_flight`.
    pub slot: Option<crate::capacity::Slot>,
    /// It probes the deployment's circuit for every replica: its outcome
    /// closes or reopens the circuit there too.
    pub probe: bool,
}

impl Gateway {
    /// Rate limits and keys: takes a request and its estimated tokens
    /// (prompt plus `max_tokens`, or `limits.default_output_tokens`) from
    /// `d`'s windows and picks a key of its pool with headroom, or refuses
    /// (a `rate_limited` attempt that was never sent, with when it frees
    /// up; an `auth` one when no key can be used). Limit events go to the
    /// store and the log.
    ///
    /// With Redis this is the request's one round trip per attempt: the
    /// client key's windows ride on its first, and a circuit another
    /// replica opened (or probes) holds the deployment back here too.
    pub(super) async fn reserve(
        &self,
        d: &Deployment,
        summary: &RequestSummary,
        request_id: &Arc<str>,
        rec: &mut Recorder,
    ) -> Result<Held, NotSent> {
        let output = summary
            .max_output_tokens
            .unwrap_or(self.config.limits.default_output_tokens);
        let tokens = u64::from(summary.input_tokens) + u64::from(output);
        let sinks = rec.sinks().clone();
        let event = |e: crate::ratelimit::Event, key: Option<String>| {
            sinks.event(
                e.kind,
                &d.name,
                serde_json::json!({"limit": e.limit.name(), "used": e.used, "max": e.max,
                    "key": key, "request_id": &**request_id}),
            );
        };
        let refused = |limit: &str, max: u64, retry: std::time::Duration, whose: &str| {
            let retry_ms = retry.as_millis().max(1) as u64;
            Attempt::held_back(
                &d.name,
                FailureClass::RateLimited,
                format!(
                    "{whose} at its {limit} limit ({max}); not sent, frees up in {retry_ms} ms"
                ),
                Some(retry_ms),
            )
        };
        let mut held = None;
        // Shared by every replica when Redis is there and answering (its
        // limits, and the cool-downs other replicas saw); the local windows
        // (this replica's share) otherwise.
        let mut shared_lease = None;
        // The lease outlives any attempt: a dead replica's places free up
        // when it runs out.
        let cap = d.max_in_flight.map(|max| {
            let t = &d.timeouts;
            let lease_ms = t.first_byte_ms + t.total_ms.max(t.idle_ms);
            (max, std::time::Duration::from_millis(lease_ms))
        });
        // Keys with limits of their own: the shared check picks the first
        // (in this replica's rotation) whose windows have room.
        let mut chosen_key = None;
        let mut probe = false;
        // The client key's windows ride on the request's first check.
        let caller = rec.record().and_then(|r| r.caller_due.take());
        if let Some(shared) = &self.shared {
            let rotation = if d.key_limits.is_empty() {
                Vec::new()
            } else {
                d.keys.rotation()
            };
            let fingerprints: Vec<String> = rotation
                .iter()
                .map(|&i| d.keys.keys()[i].fingerprint.clone())
                .collect();
            let keys =
                (!fingerprints.is_empty()).then_some((d.key_limits, fingerprints.as_slice()));
            let checked = shared
                .reserve(Check {
                    scope: "d",
                    name: &d.name,
                    limits: d.limits,
                    tokens,
                    cap,
                    keys,
                    caller: caller.as_ref().map(|(c, t)| (&*c.name, c.limits, *t)),
                    probe: Some(d.health.probe_window()),
                })
                .await;
            if let (Some(reservation), Some(r)) = (checked.caller, rec.record()) {
                r.caller_limit = Some(Hold::Shared(shared.clone(), reservation));
            }
            let circuit_open_elsewhere = adopt_cooldowns(d, &checked.cooling);
            match checked.verdict {
                Verdict::Admitted {
                    reservation,
                    headroom,
                    lease: taken,
                    key_index,
                    probe: probing,
                } => {
                    if let Some(left) = circuit_open_elsewhere {
                        // Another replica tripped it or probes it now: not
                        // sent, as if its circuit were open here.
                        shared.release(&reservation);
                        let ms = left.as_millis().max(1) as u64;
                        return Err(Attempt::held_back(
                            &d.name,
                            FailureClass::CircuitOpen,
                            format!("its circuit is open on another replica; not sent, may be tried again in {ms} ms"),
                            Some(ms),
                        )
                        .into());
                    }
                    probe = probing;
                    chosen_key = key_index.map(|c| d.keys.keys()[rotation[c]].clone());
                    shared_lease = taken;
                    d.shared_headroom.store(headroom.to_bits(), Relaxed);
                    if f64::from(1.0 - headroom) >= self.config.limits.warn_at {
                        for e in d.limiter.shared_events(None, headroom) {
                            event(e, None);
                        }
                    }
                    held = Some(Hold::Shared(shared.clone(), reservation));
                }
                Verdict::KeysBusy(wait) => {
                    let whose = if d.keys.keys().len() > 1 {
                        "every key"
                    } else {
                        "its key"
                    };
                    let max = d
                        .key_limits
                        .rpm
                        .or(d.key_limits.rps)
                        .or(d.key_limits.tpm)
                        .unwrap_or(0);
                    return Err(refused("key", max, wait, whose).into());
                }
                Verdict::AtCapacity(max) => {
                    // Another replica's release wakes no one here: look
                    // again shortly.
                    return Err(Attempt::held_back(
                        &d.name,
                        FailureClass::AtCapacity,
                        format!("at its max_in_flight ({max}, shared by the replicas); not sent"),
                        Some(25),
                    )
                    .into());
                }
                Verdict::Refused(r) => {
                    d.shared_headroom.store(0f32.to_bits(), Relaxed);
                    // Strategies see 0 only until the window frees up (no
                    // check may come to update it while others serve).
                    d.shared_refused_until_ms.store(
                        outcome::now_ms().max(0) as u64 + r.retry_after.as_millis() as u64,
                        Relaxed,
                    );
                    for e in d.limiter.shared_events(Some((r.limit, r.max)), 0.0) {
                        event(e, None);
                    }
                    return Err(refused(r.limit.name(), r.max, r.retry_after, "deployment").into());
                }
                Verdict::CallerRefused(r) => {
                    let (c, _) = caller.as_ref().expect("a caller refusal names a caller");
                    return Err(NotSent::Caller(caller_refused(c, r)));
                }
                Verdict::Unavailable => {
                    // This replica's share of the client key's windows.
                    if let Some((c, tokens)) = &caller {
                        self.caller_limits_here(c, *tokens, rec)
                            .map_err(NotSent::Caller)?;
                    }
                }
            }
        } else if let Some((c, tokens)) = &caller {
            self.caller_limits_here(c, *tokens, rec)
                .map_err(NotSent::Caller)?;
        }
        if held.is_none() && (d.limited || d.limiter.is_active()) {
            let mut events = Vec::new();
            let result = d.limiter.try_reserve(tokens, &mut events);
            for e in events {
                event(e, None);
            }
            match result {
                Ok(r) => held = Some(Hold::Local(d.limiter.clone(), r)),
                Err(r) => {
                    return Err(refused(r.limit.name(), r.max, r.retry_after, "deployment").into());
                }
            }
        }
        let mut events = Vec::new();
        let picked = match chosen_key {
            // The shared windows took this one already; what its provider
            // last said of its quota (local) still has a say.
            Some(key) if key.limiter.is_active() => match key.limiter.try_learned(tokens) {
                Ok(()) => Ok(crate::keys::Lease {
                    key,
                    reservation: None,
                }),
                Err(r) => Err(NoKey::Busy {
                    retry_after: r.retry_after,
                    limit: Some((r.limit, r.max)),
                }),
            },
            Some(key) => Ok(crate::keys::Lease {
                key,
                reservation: None,
            }),
            None => d.keys.pick(tokens, &mut events),
        };
        for (e, key) in events {
            event(e, Some(key));
        }
        match picked {
            Ok(lease) => {
                let limits = [
                    held,
                    lease
                        .reservation
                        .map(|r| Hold::Local(lease.key.limiter.clone(), r)),
                ];
                // Its concurrency cap last: the windows' reservations are
                // given back without waking anyone, a slot is not.
                let share = match &self.shared {
                    Some(_) => self.config.limits.replicas_hint.max(1),
                    None => 1,
                };
                let slot = match (d.max_in_flight, shared_lease) {
                    (None, _) => None,
                    // Held across the replicas already.
                    (Some(_), Some(lease)) => Some(d.gauge.leased(lease)),
                    // This replica's share of the cap.
                    (Some(max), None) => match d.gauge.try_acquire(max.div_ceil(share).max(1)) {
                        Some(slot) => Some(slot),
                        None => {
                            for hold in limits.iter().flatten() {
                                hold.release();
                            }
                            return Err(Attempt::held_back(
                                &d.name,
                                FailureClass::AtCapacity,
                                format!("at its max_in_flight ({max}); not sent"),
                                None,
                            )
                            .into());
                        }
                    },
                };
                Ok(Held {
                    limits,
                    key: lease.key,
                    slot,
                    probe,
                })
            }
            Err(no) => {
                // Never sent: the deployment's windows get the request back.
                if let Some(hold) = held {
                    hold.release();
                }
                Err(NotSent::Attempt(match no {
                    NoKey::Busy { retry_after, limit } => {
                        let whose = if d.keys.keys().len() > 1 { "every key" } else { "its key" };
                        match limit {
                            Some((kind, max)) => refused(kind.name(), max, retry_after, whose),
                            None => {
                                let retry_ms = retry_after.as_millis().max(1) as u64;
                                Attempt::held_back(
                                    &d.name,
                                    FailureClass::RateLimited,
                                    format!("{whose} cools down after a 429; not sent, free again in {retry_ms} ms"),
                                    Some(retry_ms),
                                )
                            }
                        }
                    }
                    NoKey::Revoked => Attempt::new(
                        &d.name,
                        FailureClass::Auth,
                        "every API key of this deployment was refused by the upstream (401/403); not sent until the config reloads or the key variables change".to_string(),
                    ),
                    NoKey::Unset(vars) => Attempt::new(
                        &d.name,
                        FailureClass::Auth,
                        format!(
                            "no API key: the environment variable{} {} (api_key_env) {} not set",
                            if vars.len() > 1 { "s" } else { "" },
                            vars.join(", "),
                            if vars.len() > 1 { "are" } else { "is" }
                        ),
                    ),
                }))
            }
        }
    }
}

/// Cool-downs another replica saw (a tripped circuit, a key's 429) apply
/// here too. How long the circuit's has left, when it is among them.
fn adopt_cooldowns(
    d: &Deployment,
    cooling: &[(String, std::time::Duration)],
) -> Option<std::time::Duration> {
    let mut circuit = None;
    for (what, left) in cooling {
        if what == "circuit" {
            d.health.adopt_cooldown(*left);
            circuit = Some(*left);
        } else if let Some(fp) = what.strip_prefix("key:")
            && let Some(key) = d.keys.keys().iter().find(|k| k.fingerprint == fp)
        {
            key.cool_down(*left);
        }
    }
    circuit
}

/// What a failed attempt means for its deployment and key.
pub(super) struct KeyVerdict {
    /// For the deployment's health: how long it cools down after a rate
    /// limit (`Some(None)`: the default); `None` when only the key does.
    pub cool: Option<Option<std::time::Duration>>,
    /// The key was refused, and the deployment has another to try now.
    pub other_key: bool,
}

/// The shortest cool-down an upstream's `Retry-After` buys a key or a
/// deployment: short enough for a provider's "retry in 100 ms" to cost
/// little, long enough that a queue waiting on it tries a few times a
/// second, not a thousand.
pub const MIN_UPSTREAM_RETRY_AFTER_MS: u64 = 250;

impl Gateway {
    /// What a failed attempt means for the key it was sent with: a 429
    /// cools the key down (for the upstream's Retry-After, capped by
    /// `limits.max_retry_after_ms`), a 401/403 takes it out until the
    /// config reloads.
    pub(super) fn key_failed(
        &self,
        d: &Deployment,
        key: &UpstreamKey,
        attempt: &mut Attempt,
        request_id: &Arc<str>,
        rec: &Recorder,
    ) -> KeyVerdict {
        let cap = self.config.limits.max_retry_after_ms;
        if let Some(ms) = attempt.retry_after_ms {
            // `Retry-After: 0` (or a date already past) from an upstream
            // that keeps refusing would have waiting requests resend to it
            // every millisecond: it counts as the floor.
            attempt.retry_after_ms = Some(ms.max(MIN_UPSTREAM_RETRY_AFTER_MS).min(cap));
        }
        match (attempt.class, attempt.status) {
            (FailureClass::RateLimited, Some(_)) => {
                let ms = attempt
                    .retry_after_ms
                    .unwrap_or(self.config.health.rate_limit_cooldown_ms)
                    .min(cap);
                key.cool_down(std::time::Duration::from_millis(ms));
                if let Some(shared) = &self.shared
                    && !key.fingerprint.is_empty()
                {
                    shared.publish_cooldown(
                        "d",
                        &d.name,
                        &format!("key:{}", key.fingerprint),
                        std::time::Duration::from_millis(ms),
                    );
                }
                if d.keys.has_other_usable(key) {
                    tracing::info!(request_id = %request_id, deployment = %d.name, key = %key.label(),
                        "key rate limited upstream: it cools down for {ms} ms, the deployment's other keys go on");
                    return KeyVerdict {
                        cool: None,
                        other_key: true,
                    };
                }
                KeyVerdict {
                    cool: Some(Some(std::time::Duration::from_millis(ms))),
                    other_key: false,
                }
            }
            (FailureClass::Auth, Some(401 | 403)) if key.env.is_some() => {
                if key.revoke() {
                    tracing::warn!(request_id = %request_id, deployment = %d.name, key = %key.label(),
                        "the upstream refused this API key: it is out until the config reloads or its variable changes");
                    rec.sinks().event(
                        "key_revoked",
                        &d.name,
                        serde_json::json!({"key": key.env, "fingerprint": key.fingerprint,
                            "status": attempt.status, "request_id": &**request_id}),
                    );
                }
                // Another key may well work: then this says nothing of
                // the deployment's health.
                let other_key = d.keys.has_other_usable(key);
                KeyVerdict {
                    cool: (!other_key).then_some(None),
                    other_key,
                }
            }
            _ => KeyVerdict {
                cool: Some(attempt.retry_after()),
                other_key: false,
            },
        }
    }
}
