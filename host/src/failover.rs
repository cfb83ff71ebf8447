//! Failover policy: what one failed attempt means for the request.
//!
//! Every failure is reduced to a [`FailureClass`]. The class decides whether
//! the next candidate is tried or the error goes back to the caller, and how
//! the failed deployment's health is affected. The rules follow what goes
//! wrong in production gateways: 429s and 5xx must fail over, a caller's
//! malformed request must not be retried on every deployment, an upstream
//! that never answers must not hang the request.

use std::time::Duration;

use serde::Serialize;

use crate::domain::{ErrorClass, UpstreamError};

/// Why one attempt on one deployment failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// 429: the deployment cools down for the upstream's Retry-After.
    RateLimited,
    /// 5xx, overloaded, reset mid-body.
    Overloaded,
    /// The upstream said it timed out, or it did not answer in time.
    Timeout,
    ContextLengthExceeded,
    ContentFiltered,
    /// The key was refused or is missing.
    Auth,
    /// The caller's request is at fault: returned to the caller.
    InvalidRequest,
    /// The upstream will not serve this, but another deployment may.
    Permanent,
    /// No connection could be made.
    Connect,
    /// The connection broke or the body could not be read.
    Transport,
    /// The adapter plugin failed (trap, deadline, missing, bad output).
    Plugin,
    /// The evaluator failed the answer.
    EvaluatorRejected,
    /// The answer is not the JSON the request's `response_format` asked
    /// for, even after one correction (see `structured`).
    InvalidOutput,
    /// The adapter says its provider cannot serve the request as asked
    /// (`build-request` → `invalid-request`): deployments behind the same
    /// adapter are skipped; when no other adapter serves it, the caller gets
    /// a 400 naming the deployment and the reason.
    Unsupported,
    /// The gateway itself is saturated (plugin instances): no deployment is to
    /// blame; when nothing else serves the request, a 503 with Retry-After.
    GatewaySaturated,
    /// The deployment is at its `max_in_flight`: not sent. With nothing
    /// else to serve the request, it waits in the queue, then a 503.
    AtCapacity,
    /// The deployment's circuit is open (or another request probes it):
    /// not sent. With nothing else to serve the request, a 503 with
    /// Retry-After.
    CircuitOpen,
    /// A resumed stream's regenerated answer did not begin with the text the
    /// client already had: it cannot be spliced on (nobody's fault).
    Diverged,
    /// Still running when the request's deadline passed (the caller's, or
    /// the operator's spent by the attempts before): abandoned, not answered,
    /// and not held against the deployment (a caller's short deadline must
    /// not manufacture failures).
    Deadline,
}

/// What the pipeline does after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    TryNextCandidate,
    ReturnToCaller,
}

impl FailureClass {
    /// The class as the API, the store and the logs name it.
    pub fn name(self) -> &'static str {
        use FailureClass::*;
        match self {
            RateLimited => "rate_limited",
            Overloaded => "overloaded",
            Timeout => "timeout",
            ContextLengthExceeded => "context_length_exceeded",
            ContentFiltered => "content_filtered",
            Auth => "auth",
            InvalidRequest => "invalid_request",
            Permanent => "permanent",
            Connect => "connect",
            Transport => "transport",
            Plugin => "plugin",
            EvaluatorRejected => "evaluator_rejected",
            InvalidOutput => "invalid_output",
            Unsupported => "unsupported",
            GatewaySaturated => "gateway_saturated",
            AtCapacity => "at_capacity",
            CircuitOpen => "circuit_open",
            Diverged => "diverged",
            Deadline => "deadline",
        }
    }

    pub fn next(self) -> Next {
        match self {
            FailureClass::InvalidRequest => Next::ReturnToCaller,
            _ => Next::TryNextCandidate,
        }
    }

    /// Whether the failure says something about the deployment's health (a
    /// caller's bad request or an evaluator's taste does not).
    pub fn is_deployment_fault(self) -> bool {
        !matches!(
            self,
            FailureClass::InvalidRequest
                | FailureClass::EvaluatorRejected
                | FailureClass::InvalidOutput
                | FailureClass::ContextLengthExceeded
                | FailureClass::ContentFiltered
                // The adapter plugin failed, not the upstream: tripping the
                // deployment's circuit would punish a healthy upstream.
                | FailureClass::Plugin
                | FailureClass::Unsupported
                | FailureClass::GatewaySaturated
                | FailureClass::AtCapacity
                | FailureClass::CircuitOpen
                | FailureClass::Diverged
                | FailureClass::Deadline
        )
    }

    /// Failures that say the request, not the deployments, is the problem
    /// when every deployment answers so (the caller should change it).
    pub fn is_request_specific(self) -> bool {
        matches!(
            self,
            FailureClass::ContextLengthExceeded | FailureClass::ContentFiltered
        )
    }
}

/// Whether a request whose candidates all failed so may be served if it
/// waits: some were held back by the gateway (a limit, a cooling key, a
/// cap), and the others were rate limited upstream (their keys cool down)
/// or can never serve it (wrong dialect, no usable key).
pub fn may_free_up(attempts: &[Attempt]) -> bool {
    attempts.iter().any(|a| a.held_back)
        && attempts.iter().all(|a| {
            a.held_back
                || matches!(
                    a.class,
                    FailureClass::RateLimited | FailureClass::Unsupported | FailureClass::Auth
                )
        })
}

/// How long a request whose candidates were all held back should wait
/// before trying again: `None` when a local concurrency cap holds one back
/// (its release wakes the queue) unless a cap shared by the replicas asks
/// to be polled; otherwise the earliest a limit frees up.
pub fn held_back_for(attempts: &[Attempt]) -> Option<Duration> {
    let local_cap = attempts
        .iter()
        .any(|a| a.class == FailureClass::AtCapacity && a.retry_after_ms.is_none());
    attempts
        .iter()
        .filter(|a| match a.class {
            FailureClass::AtCapacity | FailureClass::CircuitOpen => true,
            FailureClass::RateLimited => !local_cap,
            _ => false,
        })
        .filter_map(|a| a.retry_after_ms)
        .min()
        .map(Duration::from_millis)
}

/// One failed attempt, as reported to the caller when every candidate failed.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub deployment: String,
    pub class: FailureClass,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Never sent: the gateway held it back (a limit, a cooling key, a
    /// concurrency cap). A request with only such attempts may wait.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held_back: bool,
}

impl Attempt {
    pub fn new(deployment: &str, class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            deployment: deployment.to_string(),
            class,
            status: None,
            message: message.into(),
            retry_after_ms: None,
            held_back: false,
        }
    }

    /// An attempt the gateway held back (see [`Attempt::held_back`]).
    pub fn held_back(
        deployment: &str,
        class: FailureClass,
        message: impl Into<String>,
        retry_after_ms: Option<u64>,
    ) -> Self {
        Self {
            retry_after_ms,
            held_back: true,
            ..Self::new(deployment, class, message)
        }
    }

    /// An upstream error as the adapter classified it.
    pub fn upstream(deployment: &str, status: Option<u16>, error: UpstreamError) -> Self {
        let (class, retry_after_ms) = match error.class {
            ErrorClass::RateLimited(ms) => (FailureClass::RateLimited, ms.map(u64::from)),
            ErrorClass::Overloaded => (FailureClass::Overloaded, None),
            ErrorClass::Timeout => (FailureClass::Timeout, None),
            ErrorClass::ContextLengthExceeded => (FailureClass::ContextLengthExceeded, None),
            ErrorClass::ContentFiltered => (FailureClass::ContentFiltered, None),
            ErrorClass::Auth => (FailureClass::Auth, None),
            ErrorClass::InvalidRequest => (FailureClass::InvalidRequest, None),
            ErrorClass::Permanent => (FailureClass::Permanent, None),
        };
        Self {
            deployment: deployment.to_string(),
            class,
            status,
            message: error.message,
            retry_after_ms,
            held_back: false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_ms.map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_may_wait_only_when_something_held_back_may_free_up() {
        let held = Attempt::held_back("a", FailureClass::AtCapacity, "cap", None);
        let limited = Attempt::held_back("b", FailureClass::RateLimited, "rpm", Some(10));
        let unsupported = Attempt::new("c", FailureClass::Unsupported, "dialect");
        let upstream_429 = Attempt::new("d", FailureClass::RateLimited, "429");
        let broken = Attempt::new("e", FailureClass::Overloaded, "500");
        assert!(may_free_up(&[held.clone(), unsupported.clone()]));
        assert!(may_free_up(&[limited.clone(), upstream_429.clone()]));
        assert!(
            !may_free_up(&[held, broken]),
            "a real failure: fail over, no wait"
        );
        assert!(
            !may_free_up(&[upstream_429, unsupported]),
            "nothing held back"
        );
        assert!(!may_free_up(&[]));
    }

    #[test]
    fn a_held_back_request_waits_for_the_earliest_thing_that_frees_it() {
        let local_cap = Attempt::held_back("a", FailureClass::AtCapacity, "cap", None);
        let shared_cap = Attempt::held_back("b", FailureClass::AtCapacity, "cap", Some(25));
        let minute = Attempt::held_back("c", FailureClass::RateLimited, "rpm", Some(50_000));
        let second = Attempt::held_back("d", FailureClass::RateLimited, "rps", Some(300));
        let ms = Duration::from_millis;
        assert_eq!(
            held_back_for(&[minute.clone(), second.clone()]),
            Some(ms(300))
        );
        // A local cap frees with a release (a wake-up): a minute's limit
        // must not make the request give up at once.
        assert_eq!(held_back_for(&[local_cap.clone(), minute.clone()]), None);
        assert_eq!(
            held_back_for(&[local_cap, shared_cap.clone(), minute]),
            Some(ms(25))
        );
        assert_eq!(held_back_for(&[shared_cap, second]), Some(ms(25)));
    }

    #[test]
    fn only_invalid_requests_go_back_to_the_caller() {
        use FailureClass::*;
        for class in [
            RateLimited,
            Overloaded,
            Timeout,
            ContextLengthExceeded,
            ContentFiltered,
            Auth,
            Permanent,
            Connect,
            Transport,
            Plugin,
            EvaluatorRejected,
            InvalidOutput,
            Unsupported,
            GatewaySaturated,
        ] {
            assert_eq!(class.next(), Next::TryNextCandidate, "{class:?}");
            assert_eq!(
                serde_json::to_value(class).unwrap(),
                serde_json::json!(class.name())
            );
        }
        assert_eq!(InvalidRequest.next(), Next::ReturnToCaller);
    }

    #[test]
    fn rate_limit_keeps_retry_after() {
        let a = Attempt::upstream(
            "d",
            Some(429),
            UpstreamError {
                class: ErrorClass::RateLimited(Some(1500)),
                message: "slow down".into(),
                quota: None,
            },
        );
        assert_eq!(a.class, FailureClass::RateLimited);
        assert_eq!(a.retry_after(), Some(Duration::from_millis(1500)));
    }
}
