//! Active health checks (`deployments.<name>.health_check`): a one-token
//! completion built by the deployment's adapter, sent every interval (the
//! interval doubling while it fails), marking the deployment down after
//! `down_after` failures in a row (it is then skipped, like an open
//! circuit) and up after `up_after` successes. So a deployment that is down
//! costs client requests nothing and is not hammered, and one that recovers
//! gets its traffic back within an interval or two, whether or not a client
//! request would have probed it. Transitions are logged and stored
//! (`health_down`, `health_up`); the state is the deployment's health,
//! kept across reloads by name.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::outcome::Sinks;
use super::{Deployment, Gateway};
use crate::domain::{BuildError, Kind};
use crate::upstream::Upstream;

/// What a check sends: the smallest completion a provider accepts.
const PING: &str =
    r#"{"model":"health-check","messages":[{"role":"user","content":"ping"}],"max_tokens":1}"#;

impl Gateway {
    /// Starts a checker for every deployment with `health_check`. Each
    /// stops when this gateway is replaced by a reload and dropped (the
    /// new one starts its own).
    pub fn start_health_checks(self: &Arc<Self>, sinks: &Arc<Sinks>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for d in self.deployments.values() {
            // A wildcard deployment's model is the caller's: nothing to check.
            if d.target.model.contains('*') {
                continue;
            }
            if let Some(check) = d.health_check {
                rt.spawn(run(
                    Arc::downgrade(self),
                    d.name.clone(),
                    check,
                    Arc::downgrade(sinks),
                ));
            }
        }
    }

    /// One check of `d`: `Err` says why it failed.
    async fn check_once(&self, d: &Deployment) -> Result<(), String> {
        let adapter = self
            .registry
            .get(&d.adapter, Kind::Adapter)
            .map_err(|e| e.to_string())?;
        let id: Arc<str> = Arc::from(format!("health-check-{}", d.name));
        let request: Arc<str> = Arc::from(PING);
        let http = match adapter
            .build_request(&id, &d.target, &request)
            .await
            .map_err(|e| e.to_string())?
        {
            Ok(http) => http,
            Err(BuildError::InvalidRequest(why) | BuildError::Failed(why)) => {
                return Err(format!(
                    "adapter {:?} cannot build a check: {why}",
                    d.adapter
                ));
            }
        };
        let key = d
            .keys
            .keys()
            .iter()
            .find(|k| k.value().is_some() && !k.is_revoked())
            .or_else(|| d.keys.keys().first())
            .ok_or("no key")?
            .clone();
        let endpoint = d.endpoint(adapter.metadata(), &key);
        let started = Instant::now();
        let reply = self
            .upstream
            .send(&endpoint, http)
            .await
            .map_err(|e| e.message)?;
        let status = reply.status;
        // Read whole (the connection goes back to the pool).
        let _ = Upstream::read_body(&endpoint, reply, started).await;
        // Down means it cannot serve: a 5xx, or its key refused (401/403).
        // Any other answer (a 429: busy; a 400: the check's own request
        // refused, e.g. `max_tokens` by a model that wants another field)
        // says it is up.
        match status.as_u16() {
            500..=599 | 401 | 403 => Err(format!("status {}", status.as_u16())),
            _ => Ok(()),
        }
    }
}

async fn run(
    gateway: Weak<Gateway>,
    name: String,
    check: crate::config::HealthCheck,
    sinks: Weak<Sinks>,
) {
    let every = Duration::from_millis(check.interval_ms.max(100));
    let most = Duration::from_millis(check.max_interval_ms.max(check.interval_ms).max(100));
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let Some(gw) = gateway
            .upgrade()
            .filter(|g| !g.retired.load(std::sync::atomic::Ordering::Relaxed))
        else {
            return;
        };
        let Some(d) = gw.deployments.get(&name).cloned() else {
            return;
        };
        let outcome = tokio::time::timeout(
            Duration::from_millis(check.timeout_ms.max(1)),
            gw.check_once(&d),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", check.timeout_ms)));
        // Replaced meanwhile: the new gateway's checker has the say.
        if gw.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        drop(gw);
        wait = match &outcome {
            Ok(()) => every,
            Err(_) => (wait * 2).min(most),
        };
        let changed = d.health.record_check(outcome.is_ok(), &check, wait);
        let Some(up) = changed else {
            continue;
        };
        let detail = serde_json::json!({"error": outcome.as_ref().err()});
        if up {
            tracing::info!(deployment = %name, "health check: deployment is up again, traffic resumes");
        } else {
            tracing::warn!(deployment = %name, error = outcome.as_ref().err().map(String::as_str).unwrap_or_default(),
                "health check: deployment is down, skipped until its checks pass");
        }
        if let Some(sinks) = sinks.upgrade() {
            sinks.event(if up { "health_up" } else { "health_down" }, &name, detail);
        }
    }
}
