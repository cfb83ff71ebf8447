//! A [`Gateway`] from a resolved config, carrying over what must survive a
//! reload: each deployment's health (circuit, cool-down, averages) by
//! name, and the upstream connection pools.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::request::capabilities;
use super::{Deployment, Gateway, Member, Route};
use crate::config::{Config, Route as RouteConfig};
use crate::domain::{AuthScheme, Target};
use crate::health::DeploymentHealth;
use crate::plugins::Registry;
use crate::ratelimit::Limiter;
use crate::upstream::{BaseUrl, Proxies, Upstream};

impl Gateway {
    /// Resolves the config's deployments and routes. Missing API keys are
    /// warnings: the deployment fails its attempts (class `auth`) until the
    /// key is set (and the config reloaded).
    pub fn new(config: &Config, registry: Arc<Registry>) -> Result<Self, String> {
        Self::build(config, registry, None)
    }

    /// Like [`Gateway::new`], keeping `previous`'s health by deployment name
    /// and its connection pools.
    pub fn build(
        config: &Config,
        registry: Arc<Registry>,
        previous: Option<&Gateway>,
    ) -> Result<Self, String> {
        let capacity = previous.map(|p| p.capacity.clone()).unwrap_or_default();
        let shared = shared_limits(config, previous)?;
        // With Redis, the local windows hold this replica's share: they
        // serve while Redis is unavailable.
        let replicas = match shared {
            Some(_) => config.limits.replicas_hint,
            None => 1,
        };
        let mut deployments = HashMap::new();
        let mut connect_timeouts = vec![config.timeouts.connect_ms];
        for (name, d) in &config.deployments {
            let timeouts = match &d.timeouts {
                Some(o) => config
                    .timeouts
                    .merged(o)
                    .map_err(|e| format!("deployment {name}: timeouts: {e}"))?,
                None => config.timeouts,
            };
            connect_timeouts.push(timeouts.connect_ms);
            // Carried across a reload while the deployment still names the
            // same upstream model; one that now points elsewhere starts afresh
            // (another upstream's circuit says nothing about this one).
            let same_upstream = |p: &Gateway| {
                p.config.deployments.get(name).is_some_and(|old| {
                    old.adapter == d.adapter && old.base_url == d.base_url && old.model == d.model
                })
            };
            let health = match previous
                .filter(|p| same_upstream(p))
                .and_then(|p| p.deployments.get(name))
            {
                Some(old) => {
                    old.health.set_settings(config.health);
                    // Checks turned off: nothing would ever mark it up.
                    if d.health_check.is_none() {
                        old.health.clear_checks();
                    }
                    old.health.clone()
                }
                _ => Arc::new(DeploymentHealth::new(config.health)),
            };
            // Kept by name: what was sent to it this minute still counts.
            let local = d.limits().share(replicas);
            let limiter = match previous.and_then(|p| p.deployments.get(name)) {
                Some(old) => {
                    old.limiter.set(local, config.limits.warn_at);
                    old.limiter.clone()
                }
                None => Arc::new(Limiter::new(local, config.limits.warn_at)),
            };
            let deployment = Deployment {
                name: name.clone(),
                adapter: d.adapter.clone(),
                base_url: BaseUrl::parse(&d.base_url)
                    .map_err(|e| format!("deployment {name}: base_url: {e}"))?,
                keys: crate::keys::KeyPool::new(
                    d.key_envs(),
                    |v| config.env.get(v),
                    d.key_limits.limits().share(replicas),
                    config.limits.warn_at,
                    previous
                        .and_then(|p| p.deployments.get(name))
                        .map(|old| &old.keys),
                ),
                timeouts,
                target: Arc::new(Target {
                    deployment: name.clone(),
                    model: d.model.clone(),
                }),
                health,
                limited: !d.limits().is_empty(),
                limits: d.limits(),
                key_limits: d.key_limits.limits(),
                shared_headroom: std::sync::atomic::AtomicU32::new(1f32.to_bits()),
                shared_refused_until_ms: std::sync::atomic::AtomicU64::new(0),
                gauge: capacity.deployment(name),
                max_in_flight: d.max_in_flight,
                context_window: d.context_window,
                prefill: d.prefill,
                health_check: d.health_check,
                limiter,
                auth: d.auth.as_ref().map(AuthScheme::from),
                prices: d.prices()?,
                supports: capabilities(&d.capabilities),
            };
            deployments.insert(name.clone(), Arc::new(deployment));
        }
        let route = |name: &String, r: &RouteConfig| Route {
            name: name.clone(),
            strategy: r.strategy.clone(),
            evaluator: r.evaluator.clone(),
            evaluate_sample: r.evaluate_sample.unwrap_or(1.0),
            shadows: r.shadow_strategies.clone().into(),
            members: r
                .members
                .iter()
                .map(|m| Member {
                    deployment: deployments[&m.name].clone(),
                    priority: m.priority,
                    weight: m.weight,
                })
                .collect(),
            fallbacks: config.fallback_chain(name),
            gauge: capacity.route(name),
            max_in_flight: r.max_in_flight,
            on_content_filter: r.on_content_filter,
            retry: r.retry,
            cache: r.cache.clone(),
            cache_basis: r
                .members
                .iter()
                .map(|m| {
                    let d = &deployments[&m.name];
                    format!(
                        "{}\u{1}{}\u{1}{:?}\u{2}",
                        d.name, d.target.model, d.base_url
                    )
                })
                .collect(),
        };
        let mut routes = HashMap::new();
        let mut wildcards = Vec::new();
        for (name, r) in &config.routes {
            match name.strip_suffix('*') {
                Some(prefix) => wildcards.push((prefix.to_string(), route(name, r))),
                None => {
                    routes.insert(name.clone(), route(name, r));
                }
            }
        }
        // The longest prefix first: it is the most specific.
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let upstream = match previous {
            Some(p) => p.upstream.extended(connect_timeouts),
            None => {
                let proxies = Proxies::from_env().map_err(|e| format!("outbound proxy: {e}"))?;
                if proxies.any() {
                    tracing::info!(
                        "upstreams are called through the outbound proxy the environment names (NO_PROXY exempts hosts)"
                    );
                }
                Upstream::new(connect_timeouts, proxies).map_err(|e| format!("HTTP client: {e}"))?
            }
        };
        let models = models_list(&routes, &wildcards, config);
        let clients = crate::auth::ClientKeys::build(
            &config.auth,
            config.limits.warn_at,
            replicas,
            previous.map(|p| &p.clients),
        );
        Ok(Self {
            clients,
            capacity,
            shared,
            routes,
            wildcards,
            deployments,
            registry,
            upstream,
            models,
            config: Arc::new(config.clone()),
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// The Redis client of `limits.backend: "redis"`: the previous one while
/// its settings are the same (a reload keeps its connection).
fn shared_limits(
    config: &Config,
    previous: Option<&Gateway>,
) -> Result<Option<Arc<crate::ratelimit::shared::Shared>>, String> {
    use crate::config::LimitsBackend;
    let Some(redis) = config
        .redis
        .as_ref()
        .filter(|_| config.limits.backend == LimitsBackend::Redis)
    else {
        return Ok(None);
    };
    if let Some(p) = previous
        && p.config.redis.as_ref() == Some(redis)
        && p.config.limits.backend == LimitsBackend::Redis
        && let Some(s) = &p.shared
    {
        return Ok(Some(s.clone()));
    }
    crate::ratelimit::shared::Shared::start(
        &redis.url,
        &redis.prefix,
        std::time::Duration::from_millis(redis.timeout_ms),
    )
    .map(Some)
}

impl Gateway {
    /// Deployments whose API key differs from `old`'s (a key rotated in
    /// `.env` changes no line of the config). Names only.
    pub fn keys_changed<'a>(&'a self, old: &Gateway) -> Vec<&'a str> {
        let mut names: Vec<&str> = self
            .deployments
            .iter()
            .filter(|(name, d)| {
                old.deployments.get(*name).is_some_and(|o| {
                    let values = |p: &crate::keys::KeyPool| {
                        p.keys()
                            .iter()
                            .map(|k| k.value().map(str::to_owned))
                            .collect::<Vec<_>>()
                    };
                    values(&o.keys) != values(&d.keys)
                })
            })
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

impl Gateway {
    /// Every deployment as `GET /admin/deployments` shows it: what it is,
    /// its prices and its live health. No secrets.
    /// Each deployment: whether it is skipped now (circuit open, cooling
    /// down, marked down) and its requests in flight (for `/metrics`).
    pub fn deployment_states(&self) -> Vec<(&str, bool, u32)> {
        self.deployments
            .values()
            .map(|d| {
                let h = d.health.snapshot();
                (d.name.as_str(), !h.healthy, h.in_flight)
            })
            .collect()
    }

    /// Each deployment's rate-limit headroom (0 to 1; for `/metrics`).
    pub fn limiter_headrooms(&self) -> Vec<(&str, f32)> {
        self.deployments
            .values()
            .map(|d| {
                let h = d.health.snapshot().headroom;
                (
                    d.name.as_str(),
                    h.min(d.limiter.headroom()).min(d.keys.headroom()),
                )
            })
            .collect()
    }

    /// Requests waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.capacity.waiters.len()
    }

    pub fn deployment_views(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<&String> = self.deployments.keys().collect();
        names.sort_unstable();
        names
            .into_iter()
            .map(|name| {
                let d = &self.deployments[name];
                let c = &self.config.deployments[name];
                let h = d.health.snapshot();
                json!({
                    "name": name,
                    "adapter": d.adapter,
                    "model": c.model,
                    "base_url": c.base_url,
                    "api_key_env": c.key_envs(),
                    "key_set": d.keys.keys().iter().any(|k| k.value().is_some()),
                    // Each key: its variable, a short hash, its state and limits.
                    "keys": d.keys.views(),
                    "capabilities": c.capabilities,
                    "context_window": c.context_window,
                    "prices": {
                        "input_per_1m": d.prices.input,
                        "output_per_1m": d.prices.output,
                        "cached_input_per_1m": d.prices.cached_input,
                        "cache_write_per_1m": d.prices.cache_write,
                    },
                    "routes": self.routes.values().chain(self.wildcards.iter().map(|(_, r)| r))
                        .filter(|r| r.members.iter().any(|m| &m.deployment.name == name))
                        .map(|r| r.name.as_str()).collect::<std::collections::BTreeSet<_>>(),
                    "health": {
                        "healthy": h.healthy,
                        "cooling_down": d.health.is_cooling_down(),
                        "circuit": d.health.circuit(),
                        "headroom": h.headroom.min(d.limiter.headroom()).min(d.keys.headroom()),
                        "in_flight": h.in_flight,
                        "error_rate": h.error_rate,
                        "latency_ms": h.latency_ms,
                        "quality": h.quality,
                        "demoted_ms": d.health.demoted_for().map(|d| d.as_millis() as u64),
                    },
                    "in_flight": d.gauge.current(),
                    "max_in_flight": d.max_in_flight,
                    // Each limit with what its sliding window holds now.
                    "limits": d.limiter.usage().into_iter()
                        .map(|(kind, max, used)| (kind.name().to_string(), json!({"max": max, "used": used})))
                        .collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect()
    }
}

/// What `GET /v1/models` says of a route beyond OpenAI's fields (clients
/// ignore them): what its deployments can do together, the largest context
/// window, and the range of their prices per million tokens.
fn route_detail(r: &Route, config: &Config) -> serde_json::Value {
    let mut caps = std::collections::BTreeSet::new();
    let mut window: Option<u32> = None;
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [0f64; 2]);
    for m in &r.members {
        let c = &config.deployments[&m.deployment.name];
        caps.extend(c.capabilities.iter().cloned());
        window = window.max(c.context_window);
        let p = m.deployment.prices;
        for (i, v) in [p.input, p.output].into_iter().enumerate() {
            lo[i] = lo[i].min(v);
            hi[i] = hi[i].max(v);
        }
    }
    let range = |i: usize| (lo[i].is_finite()).then(|| json!({"min": lo[i], "max": hi[i]}));
    json!({
        "capabilities": caps,
        "context_window": window,
        "input_cost_per_1m": range(0),
        "output_cost_per_1m": range(1),
    })
}

/// `GET /v1/models`: the exact routes, and the prefixes wildcard routes open.
fn models_list(
    routes: &HashMap<String, Route>,
    wildcards: &[(String, Route)],
    config: &Config,
) -> Bytes {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut names: Vec<&str> = routes.keys().map(String::as_str).collect();
    names.sort_unstable();
    let data: Vec<_> = names
        .into_iter()
        .map(|id| {
            let mut entry =
                json!({"id": id, "object": "model", "created": created, "owned_by": "switchyard"});
            if let (Some(o), serde_json::Value::Object(more)) =
                (entry.as_object_mut(), route_detail(&routes[id], config))
            {
                o.extend(more);
            }
            entry
        })
        .collect();
    let mut prefixes: Vec<&str> = wildcards.iter().map(|(p, _)| p.as_str()).collect();
    prefixes.sort_unstable();
    Bytes::from(json!({"object": "list", "data": data, "open_prefixes": prefixes}).to_string())
}
