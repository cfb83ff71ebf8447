//! A chat request's way through the pipeline: read and checked, routed (the
//! cache, fallbacks, caller limits, admission), then served under its one
//! deadline by the chain of routes (`route.rs`), waiting in the queue while
//! every candidate is held back.

use super::*;

impl Gateway {
    /// Serves one chat-completions request. Its outcome goes into `rec`
    /// (a committed stream's pump takes the record over); with the answer
    /// comes what the response cache did, on a route that caches.
    pub async fn chat(
        self: &Arc<Self>,
        request_id: Arc<str>,
        hints: CallerHints,
        body: Bytes,
        rec: &mut Recorder,
    ) -> Result<(Answer, Option<crate::cache::Status>), ApiError> {
        let begun = Instant::now();
        // 1. Read the request.
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::BadRequest(format!("request body is not UTF-8: {e}")))?;
        let view: ChatRequestView = serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("invalid chat request body: {e}")))?;
        if let Some(r) = rec.record() {
            r.route = view.model.to_string();
            r.stream = view.stream;
        }
        if view.messages.is_empty() {
            return Err(ApiError::BadRequest(
                "`messages` must contain at least one message".into(),
            ));
        }

        // 2. Its route, and the routes to fall back to.
        let (route, rest) = self
            .route_for(view.model.as_ref())
            .ok_or_else(|| ApiError::ModelNotFound(view.model.to_string()))?;
        if let Some(r) = rec.record() {
            r.route = route.name.clone();
            r.route_found = true;
            crate::telemetry::name_request(&r.span, &r.route);
        }
        let caller = hints.caller.clone();
        if let Some(c) = &caller
            && !c.may_use(&route.name)
        {
            return Err(ApiError::Forbidden {
                key: c.name.to_string(),
                model: view.model.to_string(),
            });
        }
        // 3. The response cache, on routes that opted in: a hit is the
        // answer (no limit, budget or upstream is touched).
        let cache = match route.cache.enabled {
            false => None,
            true => match self
                .cache_lookup(route, text, view.stream, hints.cache, rec)
                .await
            {
                (status, Some(answer)) => return Ok((answer, Some(status))),
                (status, None) => Some(status),
            },
        };
        let mut chain = vec![(route, rest)];
        // The caller's list replaces the route's; it is never sent upstream
        // (even `null`: providers refuse arguments they do not know).
        let fallbacks: Vec<&str> = match &view.fallbacks {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => route.fallbacks.iter().map(String::as_str).collect(),
        };
        let request: Arc<str> = if text.contains("\"fallbacks\"") {
            Arc::from(without_member(text, "fallbacks")?)
        } else {
            Arc::from(text)
        };
        let own = view.fallbacks.is_some();
        // The chain by name, for a stream's pump to serve again (resume).
        let mut models = Vec::new();
        if view.stream {
            models.push(view.model.to_string());
        }
        for (i, name) in fallbacks.into_iter().enumerate() {
            let found = self.route_for(name).ok_or_else(|| {
                ApiError::BadRequest(format!("fallbacks[{i}]: no model (route) named {name:?}"))
            })?;
            // Only routes the caller may use: named by the caller, a 403;
            // from the route's config, passed over.
            if let Some(c) = &caller
                && !c.may_use(&found.0.name)
            {
                if own {
                    return Err(ApiError::Forbidden {
                        key: c.name.to_string(),
                        model: name.to_string(),
                    });
                }
                continue;
            }
            if !chain
                .iter()
                .any(|(r, rest)| std::ptr::eq(*r, found.0) && *rest == found.1)
            {
                chain.push(found);
                if view.stream {
                    models.push(name.to_string());
                }
            }
        }
        for (_, rest) in &chain {
            if let Some(rest) = rest {
                check_wildcard_rest(rest)?;
            }
        }
        if let Some(c) = &caller
            && c.limiter.is_active()
        {
            let tokens = self.caller_tokens(&view, text);
            match (&self.shared, rec.record()) {
                // Checked with the first deployment: one round trip.
                (Some(_), Some(r)) => r.caller_due = Some((c.clone(), tokens)),
                _ => self.caller_limits(c, tokens, rec).await?,
            }
        }
        self.admit(&chain, &view, text, rec)?;
        // A span at `debug` only: at `info` its creation, formatting and
        // per-poll enter/exit cost several microseconds a request. Lines at
        // `info` and above name the request themselves (`request_id`, `model`).
        let span = tracing::debug_span!("request", request_id = %request_id, model = %route.name);

        // One deadline for the request's whole life: attempts, back-offs,
        // queue waits (a stream's pump keeps it to its end).
        // A caller may shorten it, never stretch it past the operator's.
        let most = std::time::Duration::from_millis(self.config.timeouts.request_ms);
        let limit = hints.timeout.map_or(most, |t| t.min(most));
        let deadline = begun + limit;
        if let Some(r) = rec.record() {
            r.deadline = Some(deadline);
        }
        // JSON asked for, whole: checked (and asked for by instructions
        // where a deployment has no JSON mode). A stream goes to native
        // JSON modes only.
        let structured = if !view.stream && view.asks_for_json() {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
            crate::structured::Plan::for_request(&v)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?
        } else {
            None
        };
        let served = async {
            let summary = summarize(&view, text, hints);
            let priority = summary.priority;
            let resumable = (view.stream && route.retry.resumes > 0).then(|| resume::Resumable {
                gateway: self.clone(),
                models,
                summary: summary.clone(),
                request: request.clone(),
                request_id: request_id.clone(),
                begun,
                left: route.retry.resumes,
            });
            let mode = if view.stream {
                Mode::Stream(resumable.as_ref())
            } else {
                Mode::Complete(structured.as_ref())
            };
            let mut waiting =
                crate::capacity::Waiting::new(&self.capacity, self.config.limits.queue, begun);
            // The gateway's and the route's concurrency caps: held until
            // the record completes (a stream's end), waited for in the queue.
            loop {
                match self.request_slots(route) {
                    Ok(slots) => {
                        if let Some(r) = rec.record() {
                            r.slots = slots;
                        }
                    }
                    Err(full) => {
                        // A client key at its limit gets its 429 now, not
                        // after a wait for a place.
                        if let Some((c, tokens)) = rec.record().and_then(|r| r.caller_due.take()) {
                            self.caller_limits(&c, tokens, rec).await?;
                        }
                        let waited = Instant::now();
                        let placed = waiting.wait(priority, None).await;
                        if let Some(r) = rec.record() {
                            r.queue_wait += waited.elapsed();
                        }
                        if placed.is_err() {
                            return Err(full);
                        }
                        continue;
                    }
                }
                let attempts = match self
                    .serve_chain(&chain, &summary, &request, mode, &request_id, begun, rec)
                    .await?
                {
                    Ok(Served::Answer(answer, pump)) => {
                        if let Some(pump) = pump {
                            pump.spawn();
                        }
                        if let Answer::Complete {
                            deployment, body, ..
                        } = &answer
                        {
                            cached::store_complete(rec, deployment, body);
                        }
                        return Ok(answer);
                    }
                    Ok(Served::Resumed(_)) => {
                        unreachable!("only a stream's pump asks for a resumed leg")
                    }
                    Err(attempts) => attempts,
                };
                // No deployment check carried the client key's windows (no
                // candidate got that far): checked on their own.
                if let Some((c, tokens)) = rec.record().and_then(|r| r.caller_due.take()) {
                    self.caller_limits(&c, tokens, rec).await?;
                }
                // Every candidate was held back (limits, cooling keys,
                // caps): wait for one to free up, then try again.
                if crate::failover::may_free_up(&attempts) {
                    // A waiting request holds no place under the gateway's
                    // or the route's cap (others may use them meanwhile);
                    // given back quietly: waking the queue would wake itself.
                    if let Some(r) = rec.record() {
                        r.slots
                            .drain(..)
                            .for_each(crate::capacity::Slot::give_back_quietly);
                    }
                    let until = crate::failover::held_back_for(&attempts);
                    let waited = Instant::now();
                    let freed = waiting.wait(priority, until).await;
                    if let Some(r) = rec.record() {
                        r.queue_wait += waited.elapsed();
                    }
                    if freed.is_ok() {
                        continue;
                    }
                }
                // 5. Every candidate failed (or none could serve the request).
                return Err(nothing_served(&chain[0].0.name, attempts, &summary, rec));
            }
        }
        .instrument(span);
        // Boxed: the serving future (the chain, its attempts, their plugin
        // calls) is ~6 KB, and every future that awaits it holds it inline
        // and is moved whole when awaited in turn; boxed here, the handler's
        // futures above it no longer carry it.
        match tokio::time::timeout_at(deadline.into(), Box::pin(served)).await {
            Ok(answer) => answer.map(|a| (a, cache)),
            Err(_) => {
                tracing::warn!(request_id = %request_id, model = %route.name,
                    ms = limit.as_millis() as u64, "request deadline passed");
                Err(ApiError::DeadlineExceeded {
                    ms: limit.as_millis() as u64,
                })
            }
        }
    }
}

/// The error for a request no candidate served: none could (capabilities,
/// spent deployment budgets), or every one failed. When nothing was tried
/// and a deployment that could serve it was left out for its spent budget,
/// the budget is the reason: a 429 naming it (see
/// [`Reservation::left_out`](crate::budget::Reservation::left_out) for
/// which, when several are spent), as a route's or a caller's spent budget
/// gives.
fn nothing_served(
    model: &str,
    attempts: Vec<crate::failover::Attempt>,
    summary: &crate::domain::RequestSummary,
    rec: &mut Recorder,
) -> ApiError {
    if !attempts.is_empty() {
        return ApiError::AllFailed {
            model: model.to_string(),
            attempts,
        };
    }
    let record = rec.record();
    let held = record.as_ref().and_then(|r| r.reservation.as_ref());
    if let (Some(e), Some(r)) = (held.and_then(|h| h.refusal.as_ref()), record.as_ref()) {
        tracing::info!(request_id = %r.request_id, budget = %e.budget,
            "deployment budget spent: request refused");
        return order::budget_refusal(e.clone(), outcome::now_ms());
    }
    let blocked = held
        .map(|h| h.blocked_deployments().join(", "))
        .unwrap_or_default();
    let reason = if blocked.is_empty() {
        format!(
            "none of its deployments (or none the strategy chose) supports everything the request needs: {}",
            summary.needs.names()
        )
    } else {
        format!(
            "its deployments that could serve it are out until their budget's window ends (spent deployment budgets: {blocked}), or do not support everything the request needs: {}",
            summary.needs.names()
        )
    };
    ApiError::NoCandidate {
        model: model.to_string(),
        reason,
    }
}

/// The part of a requested model a wildcard route matched becomes part of
/// an upstream model name, which some adapters put in a URL path: only the
/// characters model names use, and no `..` segment.
fn check_wildcard_rest(rest: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:/@+-".contains(c);
    if rest.len() > 256 || !rest.chars().all(allowed) || rest.split('/').any(|s| s == "..") {
        return Err(ApiError::BadRequest(format!(
            "model name part {rest:?}: after a wildcard route's prefix, a model name may hold letters, digits and . _ : / @ + - (no `..` segment)"
        )));
    }
    Ok(())
}

/// The request text without one top-level member (a gateway parameter that
/// must not reach the upstream).
fn without_member(text: &str, name: &str) -> Result<String, ApiError> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;
    /// The members in order, values as written (nothing is re-encoded).
    struct Members<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);
    impl<'de> serde::Deserialize<'de> for Members<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        out.push(entry);
                    }
                    Ok(Members(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    let members: Members = serde_json::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("invalid chat request body: {e}")))?;
    let mut out = String::with_capacity(text.len());
    out.push('{');
    for (key, value) in members.0.iter().filter(|(k, _)| k != name) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gateway_member_is_cut_and_the_rest_kept_as_written() {
        let text = r#"{"model":"m","fallbacks":null,"n":123456789012345678901234567890,"z":{"a":[1, 2]},"fallbacks":["x"]}"#;
        assert_eq!(
            super::without_member(text, "fallbacks").unwrap(),
            r#"{"model":"m","n":123456789012345678901234567890,"z":{"a":[1, 2]}}"#
        );
    }
}
