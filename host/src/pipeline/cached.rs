//! The response cache on the request path: looked up once a request's
//! route is known (a hit answers without an upstream call), stored once an
//! answer passed (a complete one here, a stream's by its pump at its end).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::outcome::Recorder;
use super::{Answer, Gateway, Route};
use crate::cache::{Directives, Pending, Status, key_for};
use crate::domain::Kind;

/// What the lookup decided.
enum Lookup {
    /// Answered from the cache: the answer, the deployment that first gave
    /// it, and what the hit saved.
    Hit(Answer, Arc<str>, f64),
    /// Not in it: go upstream, and store the answer (unless `no-store`).
    Miss(Option<Pending>),
    /// The cache does not apply (not deterministic, the caller said so, or
    /// it failed).
    Bypass,
}

impl Gateway {
    /// Looks `request` up on `route` (whose cache is on): what the cache
    /// did, and the answer on a hit. The record learns it (a miss's pending
    /// store included).
    pub(super) async fn cache_lookup(
        &self,
        route: &Route,
        request: &str,
        stream: bool,
        directives: Directives,
        rec: &mut Recorder,
    ) -> (Status, Option<Answer>) {
        let lookup = match rec.sinks().cache.clone() {
            Some(cache) => {
                self.lookup(&cache, route, request, stream, directives)
                    .await
            }
            None => Lookup::Bypass,
        };
        let (status, answer, cached, pending) = match lookup {
            Lookup::Hit(answer, deployment, saved) => {
                (Status::Hit, Some(answer), Some((deployment, saved)), None)
            }
            Lookup::Miss(pending) => (Status::Miss, None, None, pending),
            Lookup::Bypass => (Status::Bypass, None, None, None),
        };
        if let Some(r) = rec.record() {
            if let Some((deployment, saved)) = &cached {
                // At debug: a hit is in the store and the metrics, and a
                // line at info would cost a sixth of serving it.
                tracing::debug!(request_id = %r.request_id, model = %route.name,
                    deployment = %deployment, saved_usd = saved, "answered from the cache");
            }
            r.cache = Some(status);
            r.cached = cached;
            r.cache_put = pending;
        }
        (status, answer)
    }

    async fn lookup(
        &self,
        cache: &Arc<crate::cache::Cache>,
        route: &Route,
        request: &str,
        stream: bool,
        directives: Directives,
    ) -> Lookup {
        if directives.no_read && directives.no_store {
            return Lookup::Bypass;
        }
        // The route's plugins by content: a swap makes new keys.
        // And its deployments as configured (`cache_basis`, made when the
        // config loads): another model or upstream behind the same name
        // starts afresh.
        let mut plugins: Vec<&str> = Vec::with_capacity(route.members.len() + 2);
        plugins.push(&route.cache_basis);
        let mut held = Vec::with_capacity(route.members.len() + 1);
        for m in &route.members {
            match self.registry.get(&m.deployment.adapter, Kind::Adapter) {
                Ok(p) => held.push(p),
                Err(_) => return Lookup::Bypass,
            }
        }
        if let Some(e) = &route.evaluator {
            match self.registry.get(e, Kind::Evaluator) {
                Ok(p) => held.push(p),
                Err(_) => return Lookup::Bypass,
            }
        }
        plugins.extend(held.iter().map(|p| p.hash.as_str()));
        let normal = match key_for(&route.name, &plugins, request) {
            Ok(n) => n,
            Err(_) => return Lookup::Bypass,
        };
        if !normal.deterministic && !route.cache.all_requests && !directives.opt_in {
            return Lookup::Bypass;
        }
        let pending = (!directives.no_store).then(|| Pending {
            key: normal.key,
            route: route.name.clone(),
            ttl_ms: route.cache.ttl_s.saturating_mul(1000).min(i64::MAX as u64) as i64,
            members: route
                .members
                .iter()
                .map(|m| m.deployment.name.clone())
                .collect(),
            stream_whole: normal.stream_whole,
        });
        if directives.no_read {
            return Lookup::Miss(pending);
        }
        let entry = match cache.get(&normal.key).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return Lookup::Miss(pending),
            Err(_) => return Lookup::Bypass,
        };
        let answer = if stream {
            match crate::cache::replay::sse(&entry.body, normal.include_usage) {
                Ok(events) => {
                    let (tx, rx) = mpsc::channel(1);
                    let _ = tx.try_send(Bytes::from(events));
                    Answer::Stream {
                        deployment: entry.deployment.to_string(),
                        events: rx,
                        attempts: 0,
                    }
                }
                Err(e) => {
                    cache.failed(&e);
                    return Lookup::Bypass;
                }
            }
        } else {
            Answer::Complete {
                deployment: entry.deployment.to_string(),
                body: entry.body.to_vec(),
                attempts: 0,
            }
        };
        Lookup::Hit(answer, entry.deployment, entry.cost)
    }
}

/// Stores a complete answer of a miss that passed its evaluation (or had
/// none).
pub(super) fn store_complete(rec: &mut Recorder, deployment: &str, body: &[u8]) {
    let Some(cache) = rec.sinks().cache.clone() else {
        return;
    };
    let store = rec.sinks().store.clone();
    let Some(r) = rec.record() else {
        return;
    };
    let Some(pending) = r.cache_put.take() else {
        return;
    };
    if !pending.members.iter().any(|m| m == deployment) {
        return;
    }
    let Some(last) = r.attempts.last() else {
        return;
    };
    if last.evaluator_failed.is_some() || last.verdict.as_ref().is_some_and(|(_, v)| !v.pass) {
        return;
    }
    let cost = last.cost.unwrap_or(0.0);
    cache.store(
        pending,
        Bytes::copy_from_slice(body),
        deployment,
        cost,
        store.as_ref(),
    );
}
