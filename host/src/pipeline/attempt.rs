//! One attempt on one deployment: build the upstream request with the
//! adapter, send it, parse or classify the answer, evaluate it.

use std::sync::Arc;
use std::time::Instant;

use super::outcome::{self, AttemptRecord, Recorder, content_chars, estimate_tokens};
use super::stream::{StreamLog, start_stream};
use super::transcript::{StreamEvaluation, Transcript};
use super::{Answer, Deployment, Gateway, Mode, Route, Served};
use crate::domain::{BuildError, Capabilities, Kind, Target, Usage};
use crate::failover::{Attempt, FailureClass};
use crate::keys::UpstreamKey;
use crate::plugins::PluginError;
use crate::upstream::{Upstream, header_block};

/// A plugin failure as an attempt: a saturated gateway is nobody's fault.
pub(super) fn plugin_failed(deployment: &str, e: PluginError) -> Attempt {
    let class = if e.is_saturation() {
        FailureClass::GatewaySaturated
    } else {
        FailureClass::Plugin
    };
    Attempt::new(deployment, class, e.to_string())
}

/// Whether `body` is a `chat.completion` a client can read: a JSON object
/// whose `choices` is a list of objects, each with a `message` object (the
/// rest is the adapter's to say). The reason, when it is not.
pub(super) fn completion_shape(body: &str) -> Result<(), String> {
    use serde::Deserialize;
    use serde_json::value::RawValue;
    #[derive(Deserialize)]
    struct Completion<'a> {
        #[serde(borrow)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow)]
        message: &'a RawValue,
    }
    // (A derived struct also reads a JSON array, by position.)
    if !body.trim_start().starts_with('{') {
        return Err("not a JSON object".into());
    }
    let c: Completion = serde_json::from_str(body).map_err(|e| e.to_string())?;
    match c
        .choices
        .iter()
        .position(|ch| !ch.message.get().starts_with('{'))
    {
        Some(i) => Err(format!("choices[{i}].message is not an object")),
        None => Ok(()),
    }
}

impl Gateway {
    /// One attempt on one deployment. What it learns (status, upstream
    /// time, usage and cost) goes into `record`; a committed stream hands
    /// `rec` to its pump.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt(
        &self,
        route: &Route,
        d: &Deployment,
        key: &UpstreamKey,
        target: &Arc<Target>,
        request: &Arc<str>,
        mode: Mode<'_>,
        request_id: &Arc<str>,
        record: &mut AttemptRecord,
        rec: &mut Recorder,
    ) -> Result<Served, Attempt> {
        let plugin_failed = |e: PluginError| plugin_failed(&d.name, e);
        let adapter = self
            .registry
            .get(&d.adapter, Kind::Adapter)
            .map_err(plugin_failed)?;
        // JSON asked for: a correction of this deployment's last answer, or
        // format instructions where it has no JSON mode of its own.
        let structured = match mode {
            Mode::Complete(plan) => plan,
            _ => None,
        };
        let asked = match structured {
            Some(plan) => plan.take_repair().unwrap_or_else(|| {
                if d.supports.contains(Capabilities::JSON_MODE) {
                    request.clone()
                } else {
                    plan.instructed(request)
                }
            }),
            None => request.clone(),
        };
        let mut http = match adapter
            .build_request(request_id, target, &asked)
            .await
            .map_err(plugin_failed)?
        {
            Ok(http) => http,
            Err(BuildError::InvalidRequest(reason)) => {
                return Err(Attempt::new(
                    &d.name,
                    FailureClass::Unsupported,
                    format!("adapter {:?} cannot send this request: {reason}", d.adapter),
                ));
            }
            Err(BuildError::Failed(message)) => {
                return Err(plugin_failed(PluginError::Guest {
                    plugin: d.adapter.clone(),
                    message,
                }));
            }
        };

        let in_flight = d.health.start();
        let started = Instant::now();
        let mut endpoint = d.endpoint(adapter.metadata(), key);
        endpoint.streamed = mode.streams();
        crate::telemetry::inject(&record.span, &mut http.headers);
        // The answer is awaited: with busy polling, the serving thread
        // keeps polling for it (health checks do not count).
        crate::busy_poll::activity();
        let sent = self.upstream.send(&endpoint, http).await;
        record.upstream = started.elapsed();
        let response = sent?;
        record.status = Some(response.status.as_u16());
        rec.update_open_attempt(record);

        if !response.status.is_success() {
            let status = response.status.as_u16();
            let body = Upstream::read_body(&endpoint, response, started).await;
            record.upstream = started.elapsed();
            let body = body?;
            let error = adapter
                .classify_error(request_id, body)
                .await
                .map_err(plugin_failed)?;
            if let Some(q) = &error.quota {
                key.limiter.learn(q, self.config.limits.max_retry_after_ms);
            }
            return Err(Attempt::upstream(&d.name, Some(status), error));
        }

        if mode.streams() {
            let headers = header_block(&response.headers, endpoint.response_headers);
            let (session, quota) = adapter
                .open_stream(request_id, target, request, headers)
                .await
                .map_err(plugin_failed)?
                .map_err(|e| Attempt::upstream(&d.name, None, e))?;
            if let Some(q) = &quota {
                key.limiter.learn(q, self.config.limits.max_retry_after_ms);
            }
            // A resumed leg's pump has its own evaluation.
            let evaluator = route
                .evaluator_for(request_id)
                .filter(|_| matches!(mode, Mode::Stream(_)));
            let evaluation = evaluator.map(|evaluator| StreamEvaluation {
                registry: self.registry.clone(),
                evaluator: evaluator.clone(),
                request: request.clone(),
                transcript: Transcript::default(),
            });
            // The pump's lines name the request themselves (a span at
            // `info` would cost its creation, its formatting and an enter
            // and exit on each of the pump's polls, several per event); its
            // `debug` span gives the same names to lines at `debug`.
            let log = StreamLog {
                span: tracing::debug_span!(
                    "stream",
                    request_id = %request_id,
                    model = %route.name,
                    deployment = %d.name
                ),
                request_id: request_id.clone(),
                model: Arc::from(route.name.as_str()),
            };
            // Boxed: ~3 KB that every whole answer's attempt would carry
            // (and copy) otherwise.
            return Box::pin(start_stream(
                d,
                session,
                response,
                started,
                record,
                rec,
                request.clone(),
                in_flight,
                mode,
                evaluation,
                log,
            ))
            .await;
        }

        // A whole answer is generated before its status is sent, so it is
        // billed even if it never arrives: until its own usage is read, its
        // prompt counts, estimated (what it said cannot be known), for a
        // download cut by a timeout, an error or the request's deadline, and
        // a deadline or a plugin failure during the parse. A body the
        // adapter reads and finds unusable withdraws the estimate: a 200
        // from a proxy's error page is not the provider's bill.
        let prompt_estimate = estimate_tokens(content_chars(request));
        record.set_usage(
            Usage {
                prompt_tokens: prompt_estimate,
                ..Usage::default()
            },
            true,
        );
        rec.update_open_attempt(record);
        let body = Upstream::read_body(&endpoint, response, started).await;
        record.upstream = started.elapsed();
        let body = body?;
        let status = body.status;
        let parsed = adapter
            .parse_response(request_id, target, body)
            .await
            .map_err(plugin_failed)?;
        let mut answer = match parsed {
            Ok(answer) => answer,
            Err(e) => {
                record.clear_usage();
                rec.update_open_attempt(record);
                return Err(Attempt::upstream(&d.name, Some(status), e));
            }
        };
        if let Some(q) = &answer.quota {
            key.limiter.learn(q, self.config.limits.max_retry_after_ms);
        }
        if crate::telemetry::enabled() {
            crate::telemetry::finish_reasons(&answer.body, &mut record.finish_reasons);
        }
        match answer.usage {
            Some(usage) => record.set_usage(usage, false),
            None => record.set_usage(
                Usage {
                    prompt_tokens: prompt_estimate,
                    completion_tokens: estimate_tokens(content_chars(&answer.body)),
                    ..Usage::default()
                },
                true,
            ),
        }
        log_usage(record);
        rec.update_open_attempt(record);
        // What the adapter made of a 2xx answer is sent on as it is: one
        // that is not a chat completion (a third-party adapter's bug) is its
        // failure, and the next candidate is tried, never a 200 the client
        // cannot read. (Its usage stays: the upstream answered, and billed.)
        if let Err(why) = completion_shape(&answer.body) {
            let head: String = answer.body.chars().take(200).collect();
            tracing::warn!(request_id = %request_id, deployment = %d.name, plugin = %adapter.id,
                "the adapter's answer is not a chat completion ({why}); it began: {head:?}");
            return Err(Attempt::new(
                &d.name,
                FailureClass::Plugin,
                format!(
                    "adapter {}: its answer is not a chat completion ({why})",
                    adapter.id
                ),
            ));
        }

        if let Some(plan) = structured {
            match plan.check(&answer.body) {
                Ok(None) => {}
                Ok(Some(body)) => answer.body = body,
                Err(failed) => {
                    tracing::warn!(request_id = %request_id, model = %route.name, deployment = %d.name,
                        "structured output: {}", failed.reason);
                    plan.prepare_repair(&asked, &failed);
                    return Err(Attempt::new(
                        &d.name,
                        FailureClass::InvalidOutput,
                        format!("structured output: {}", failed.reason),
                    ));
                }
            }
        }
        if let Some(evaluator) = route.evaluator_for(request_id) {
            self.evaluate(
                &route.name,
                d,
                evaluator,
                request,
                &answer.body,
                request_id,
                record,
            )
            .await?;
        }
        Ok(Served::Answer(
            Answer::Complete {
                deployment: d.name.clone(),
                body: answer.body.into_bytes(),
                attempts: 0,
            },
            None,
        ))
    }

    /// Runs the route's evaluator. A failing *evaluator* accepts the answer
    /// (logged); a failing *verdict* rejects it.
    #[allow(clippy::too_many_arguments)]
    async fn evaluate(
        &self,
        model: &str,
        d: &Deployment,
        evaluator: &str,
        request: &Arc<str>,
        response: &str,
        request_id: &Arc<str>,
        record: &mut AttemptRecord,
    ) -> Result<(), Attempt> {
        let verdict = match self.registry.get(evaluator, Kind::Evaluator) {
            Ok(plugin) => {
                plugin
                    .evaluate(request_id, request.clone(), Arc::from(response))
                    .await
            }
            Err(e) => Err(e),
        };
        match verdict {
            Err(e) => {
                tracing::warn!(request_id = %request_id, model = %model, deployment = %d.name, plugin = %evaluator, "evaluator failed, accepting the answer: {e}");
                record.evaluator_failed = Some((Arc::from(evaluator), e.to_string()));
                Ok(())
            }
            Ok(v) => {
                outcome::verdict(record, &d.health, evaluator, &v);
                if v.pass {
                    Ok(())
                } else {
                    tracing::warn!(request_id = %request_id, model = %model, deployment = %d.name, plugin = %evaluator, score = v.score, reasons = ?v.reasons, "evaluator rejected the answer");
                    Err(Attempt::new(
                        &d.name,
                        FailureClass::EvaluatorRejected,
                        format!(
                            "evaluator {evaluator:?} rejected the answer (score {:.2}): {}",
                            v.score,
                            v.reasons.join("; ")
                        ),
                    ))
                }
            }
        }
    }
}

fn log_usage(record: &AttemptRecord) {
    if let Some(u) = record.usage {
        tracing::debug!(
            prompt_tokens = u.prompt_tokens,
            completion_tokens = u.completion_tokens,
            cached_prompt_tokens = u.cached_prompt_tokens,
            reasoning_tokens = u.reasoning_tokens,
            cache_write_tokens = u.cache_write_tokens,
            estimated = record.estimated,
            cost_usd = record.cost.unwrap_or(0.0),
            "usage"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::completion_shape;

    #[test]
    fn only_a_chat_completion_passes_the_shape_check() {
        assert!(completion_shape(r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{}}"#).is_ok());
        assert!(
            completion_shape(r#"{"choices":[]}"#).is_ok(),
            "n=0 is the caller's to judge"
        );
        for (bad, why) in [
            ("", "not a JSON object"),
            ("not json", "not a JSON object"),
            (r#"[[{"message":{}}]]"#, "not a JSON object"),
            ("{", "EOF"),
            (r#"{"id":"x"}"#, "missing field `choices`"),
            (r#"{"choices":{}}"#, "expected a sequence"),
            (r#"{"choices":[{"text":"hi"}]}"#, "missing field `message`"),
            (
                r#"{"choices":[{"message":{}},{"message":"hi"}]}"#,
                "choices[1].message",
            ),
            (r#"{"choices":[{"message":{}}]} trailing"#, "trailing"),
        ] {
            let e = completion_shape(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
