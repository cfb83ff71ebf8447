//! Readiness (`GET /readyz`): whether every route can serve now. A route
//! is not ready when none of its deployments can be sent a request: each
//! is marked down (its circuit open, cooling down after a 429, or down by
//! its health checks), or its adapter plugin is missing, rejected or
//! quarantined. Degraded features (the store, Redis, a strategy or an
//! evaluator falling back) are reported but leave the gateway ready: they
//! cost a feature, never a request.

use serde_json::{Value, json};

use super::{Gateway, Route};
use crate::domain::Kind;
use crate::plugins::PluginState;

impl Gateway {
    /// Why the gateway is not ready (empty: ready), and a detail per route
    /// and deployment.
    pub fn readiness(&self) -> (Vec<String>, Value) {
        let mut reasons = Vec::new();
        let mut routes = serde_json::Map::new();
        let all = self
            .routes
            .iter()
            .map(|(n, r)| (n.as_str(), r))
            .chain(self.wildcards.iter().map(|(p, r)| (p.as_str(), r)));
        for (name, route) in all {
            let (usable, detail) = self.route_state(route);
            if usable == 0 {
                let why: Vec<String> = detail
                    .iter()
                    .filter_map(|(d, v)| Some(format!("{d}: {}", v["problem"].as_str()?)))
                    .collect();
                reasons.push(format!(
                    "model {name:?}: no deployment can serve it ({})",
                    why.join("; ")
                ));
            }
            routes.insert(
                name.to_string(),
                json!({"ready": usable > 0, "usable": usable, "deployments": detail}),
            );
        }
        let mut detail = json!({"routes": routes});
        if let Some(shared) = &self.shared {
            detail["redis"] =
                json!({"state": if shared.is_degraded() { "degraded" } else { "ok" }});
        }
        (reasons, detail)
    }

    /// How many of `route`'s deployments can be sent a request, and each
    /// one's state.
    fn route_state(&self, route: &Route) -> (usize, serde_json::Map<String, Value>) {
        let mut usable = 0;
        let mut detail = serde_json::Map::new();
        for m in &route.members {
            let d = &m.deployment;
            let adapter = match self.registry.get(&d.adapter, Kind::Adapter) {
                Err(e) => Err(format!("adapter {:?} is not loaded: {e}", d.adapter)),
                Ok(p) => match p.state() {
                    PluginState::Quarantined { remaining_ms } => Err(format!(
                        "adapter {:?} is quarantined for {remaining_ms} ms more",
                        d.adapter
                    )),
                    PluginState::Active => Ok(()),
                },
            };
            let up = d.health.snapshot().healthy;
            let problem = match (&adapter, up) {
                (Err(e), _) => Some(e.clone()),
                (Ok(()), false) => Some(
                    "down (circuit open, cooling down, or failing its health checks)".to_string(),
                ),
                (Ok(()), true) => None,
            };
            if problem.is_none() {
                usable += 1;
            }
            detail.insert(
                d.name.clone(),
                json!({"up": up, "adapter_loaded": adapter.is_ok(), "problem": problem}),
            );
        }
        (usable, detail)
    }
}
