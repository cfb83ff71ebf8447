//! Rules JSON Schema cannot express, checked once the config deserialised:
//! deployments defined once (inline definitions join the top-level map),
//! every name a route lists defined, fallbacks that exist and never loop,
//! parsable addresses and URLs, well-formed timeout overrides, each plugin
//! used as one kind only.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Config, Member, MemberEntry, Route};
use crate::domain::Kind;

impl Config {
    /// Resolves route members and checks cross-references; one line per
    /// problem, each naming its JSON path.
    pub(super) fn resolve(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        self.check_addresses(&mut problems);
        self.resolve_members(&mut problems);
        for (name, d) in &self.deployments {
            let at = d.origin(name);
            if let Err(e) = crate::upstream::BaseUrl::parse(&d.base_url) {
                problems.push(format!("  at {at}/base_url: {e}"));
            }
            if let Some(t) = &d.timeouts
                && let Err(e) = self.timeouts.merged(t)
            {
                problems.push(format!("  at {at}/timeouts: {e}"));
            }
            if let Err(e) = d.prices() {
                problems.push(format!("  at {at}: {e}"));
            }
        }
        for (name, b) in &self.budgets {
            let at = format!("/budgets/{name}");
            if let Some(r) = &b.route
                && !self.routes.contains_key(r)
            {
                problems.push(format!("  at {at}/route: no route named {r:?}"));
            }
            if let Some(d) = &b.deployment
                && !self.deployments.contains_key(d)
            {
                problems.push(format!("  at {at}/deployment: no deployment named {d:?}"));
            }
            if let Some(c) = &b.caller
                && !self.auth.keys.contains_key(c)
            {
                problems.push(format!(
                    "  at {at}/caller: no client key named {c:?} in /auth/keys (a caller is a client key's name)"
                ));
            }
            if b.deployment.is_some() && b.action == crate::config::BudgetAction::Cheapest {
                problems.push(format!(
                    "  at {at}/action: \"cheapest\" narrows a route; a deployment budget can \"reject\" (take the deployment out) or \"alert\""
                ));
            }
        }
        if self.limits.backend == crate::config::LimitsBackend::Redis && self.redis.is_none() {
            problems.push(
                "  at /limits/backend: \"redis\" needs a /redis section with its url".to_string(),
            );
        }
        let mut hashes = std::collections::HashMap::new();
        for (name, k) in &self.auth.keys {
            let at = format!("/auth/keys/{name}");
            match crate::auth::parse_hash(&k.hash) {
                Err(e) => problems.push(format!("  at {at}/hash: {e}")),
                Ok(h) => {
                    if let Some(other) = hashes.insert(h, name) {
                        problems.push(format!(
                            "  at {at}/hash: the same key as /auth/keys/{other}"
                        ));
                    }
                }
            }
            for (i, r) in k.routes.iter().enumerate() {
                let known = self.routes.contains_key(r)
                    || r.strip_suffix('*')
                        .is_some_and(|p| self.routes.keys().any(|name| name.starts_with(p)));
                if !known {
                    problems.push(format!(
                        "  at {at}/routes/{i}: {r:?} names no route (route names, or a prefix ending in *)"
                    ));
                }
            }
        }
        if self.monitor.baseline_s <= self.monitor.window_s {
            problems.push(format!(
                "  at /monitor/baseline_s: {} must be longer than window_s ({})",
                self.monitor.baseline_s, self.monitor.window_s
            ));
        }
        self.check_fallbacks(&mut problems);
        self.check_plugin_kinds(&mut problems);
        problems
    }

    fn check_addresses(&self, problems: &mut Vec<String>) {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "  at /listen: {:?} is not a socket address (host:port)",
                self.listen
            ));
        }
        if let Some(demo) = &self.demo_upstream
            && demo.listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(format!(
                "  at /demo_upstream/listen: {:?} is not a socket address (host:port)",
                demo.listen
            ));
        }
    }

    /// Inline definitions join [`Config::deployments`] (a name defined twice
    /// is refused); every route gets its [`Route::members`].
    fn resolve_members(&mut self, problems: &mut Vec<String>) {
        for (name, d) in self.deployments.iter_mut() {
            d.name = name.clone();
        }
        // Inline definitions first, so a route may list by name a deployment
        // another route defines inline (as a migration does).
        for (route_name, route) in self.routes.iter() {
            for (i, entry) in route.deployments.iter().enumerate() {
                let MemberEntry::Inline(d) = entry else {
                    continue;
                };
                let at = format!("/routes/{route_name}/deployments/{i}");
                if let Some(first) = self.deployments.get(&d.name) {
                    problems.push(format!(
                        "  at {at}/name: deployment {:?} is already defined at {}; define it once (under /deployments) and list its name in each route",
                        d.name,
                        first.origin(&d.name)
                    ));
                    continue;
                }
                let mut d = (**d).clone();
                d.defined_at = Some(at);
                self.deployments.insert(d.name.clone(), d);
            }
        }
        for (route_name, route) in self.routes.iter_mut() {
            let mut members = Vec::with_capacity(route.deployments.len());
            for (i, entry) in route.deployments.iter().enumerate() {
                let at = format!("/routes/{route_name}/deployments/{i}");
                let (name, priority, weight) = match entry {
                    MemberEntry::Name(name) => (name.clone(), None, None),
                    MemberEntry::Ref(r) => (r.name.clone(), r.priority, r.weight),
                    MemberEntry::Inline(d) => {
                        // Defined above, unless it was a second definition.
                        if self
                            .deployments
                            .get(&d.name)
                            .and_then(|x| x.defined_at.as_deref())
                            != Some(at.as_str())
                        {
                            continue;
                        }
                        (d.name.clone(), Some(d.priority), Some(d.weight))
                    }
                };
                let Some(d) = self.deployments.get(&name) else {
                    problems.push(format!(
                        "  at {at}: no deployment named {name:?} (define it under /deployments)"
                    ));
                    continue;
                };
                if d.model.contains('*') && !Route::is_wildcard(route_name) {
                    problems.push(format!(
                        "  at {at}: deployment {name:?} has model {:?}, but `*` stands for the rest of a wildcard route's name and {route_name:?} is not one",
                        d.model
                    ));
                    continue;
                }
                if members.iter().any(|m: &Member| m.name == name) {
                    problems.push(format!(
                        "  at {at}: deployment {name:?} is listed twice in this route"
                    ));
                    continue;
                }
                members.push(Member {
                    priority: priority.unwrap_or(d.priority),
                    weight: weight.unwrap_or(d.weight),
                    name,
                });
            }
            route.members = members;
        }
    }

    /// Fallbacks name exact routes and never lead back to where they started.
    fn check_fallbacks(&self, problems: &mut Vec<String>) {
        for (name, route) in &self.routes {
            for (i, fallback) in route.fallbacks.iter().enumerate() {
                let at = format!("/routes/{name}/fallbacks/{i}");
                if Route::is_wildcard(fallback) {
                    problems.push(format!(
                        "  at {at}: {fallback:?} is a wildcard route; a fallback names one route"
                    ));
                } else if !self.routes.contains_key(fallback) {
                    problems.push(format!("  at {at}: no route named {fallback:?}"));
                }
            }
        }
        // A loop is reported once, from the route that sorts first in it.
        let mut reported: HashSet<String> = HashSet::new();
        for name in self.routes.keys() {
            if let Some(cycle) = find_cycle(&self.routes, name)
                && cycle.first() == Some(name)
                && reported.insert(name.clone())
            {
                problems.push(format!(
                    "  at /routes/{name}/fallbacks: fallbacks loop: {}",
                    cycle.join(" → ")
                ));
            }
        }
    }

    fn check_plugin_kinds(&self, problems: &mut Vec<String>) {
        let mut kinds: HashMap<String, (Kind, String)> = HashMap::new();
        for (id, kind, at) in self.plugin_references() {
            match kinds.get(&id) {
                Some((k, first)) if *k != kind => problems.push(format!(
                    "  at {at}: plugin {id:?} is used as a {kind} here but as a {k} at {first}"
                )),
                Some(_) => {}
                None => {
                    kinds.insert(id, (kind, at));
                }
            }
        }
    }

    /// The routes tried after `route`'s own deployments, in order: its
    /// fallbacks, each followed by theirs, each route once.
    pub fn fallback_chain(&self, route: &str) -> Vec<String> {
        fn walk(routes: &BTreeMap<String, Route>, at: &str, out: &mut Vec<String>) {
            let Some(r) = routes.get(at) else { return };
            for f in &r.fallbacks {
                if !out.contains(f) {
                    out.push(f.clone());
                    walk(routes, f, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.routes, route, &mut out);
        out.retain(|r| r != route);
        out
    }
}

/// A path of fallbacks from `start` back to `start`, if there is one.
fn find_cycle(routes: &BTreeMap<String, Route>, start: &str) -> Option<Vec<String>> {
    fn dfs(
        routes: &BTreeMap<String, Route>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut HashSet<String>,
    ) -> bool {
        let Some(route) = routes.get(at) else {
            return false;
        };
        for next in &route.fallbacks {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(routes, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = HashSet::new();
    dfs(routes, start, start, &mut path, &mut seen).then_some(path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_str(text, Path::new("t.json"), Path::new("/b")).map_err(|e| e.to_string())
    }

    const DEPLOYMENTS: &str = r#""deployments": {
        "a": {"adapter": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m", "priority": 3},
        "b": {"adapter": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "n"}
    }"#;

    #[test]
    fn deployments_are_defined_once_and_listed_by_routes() {
        let c = parse(&format!(
            r#"{{{DEPLOYMENTS}, "routes": {{
                "x": {{"deployments": ["a", {{"name": "b", "priority": 1, "weight": 5}}]}},
                "y": {{"deployments": [{{"name": "c", "adapter": "openai", "base_url": "http://h/", "model": "z"}}, "a"]}}
            }}}}"#
        ))
        .unwrap();
        let x = &c.routes["x"].members;
        assert_eq!(
            (x[0].name.as_str(), x[0].priority, x[0].weight),
            ("a", 3, 1)
        );
        assert_eq!(
            (x[1].name.as_str(), x[1].priority, x[1].weight),
            ("b", 1, 5)
        );
        assert_eq!(c.deployments["c"].origin("c"), "/routes/y/deployments/0");
        assert_eq!(c.deployments["a"].name, "a");
    }

    #[test]
    fn unknown_and_doubly_defined_deployments_are_refused_with_their_path() {
        let e = parse(&format!(
            r#"{{{DEPLOYMENTS}, "routes": {{"x": {{"deployments": ["nope"]}}}}}}"#
        ))
        .unwrap_err();
        assert!(
            e.contains("/routes/x/deployments/0: no deployment named \"nope\""),
            "{e}"
        );
        let e = parse(&format!(
            r#"{{{DEPLOYMENTS}, "routes": {{"x": {{"deployments": [{{"name": "a", "adapter": "o", "base_url": "http://h/", "model": "z"}}]}}}}}}"#
        ))
        .unwrap_err();
        assert!(e.contains("already defined at /deployments/a"), "{e}");
    }

    #[test]
    fn a_route_may_list_a_deployment_another_defines_inline() {
        let c = parse(
            r#"{"routes": {
                "a": {"deployments": ["c"]},
                "b": {"deployments": [{"name": "c", "adapter": "openai", "base_url": "http://h/", "model": "z"}]}
            }}"#,
        )
        .unwrap();
        assert_eq!(c.routes["a"].members[0].name, "c");
        let e = parse(
            r#"{"deployments": {"any": {"adapter": "openai", "base_url": "http://h/", "model": "*"}},
                "routes": {"exact": {"deployments": ["any"]}, "w/*": {"deployments": ["any"]}}}"#,
        )
        .unwrap_err();
        assert!(
            e.contains("/routes/exact/deployments/0") && e.contains("not one"),
            "{e}"
        );
        assert!(!e.contains("/routes/w/*"), "{e}");
    }

    #[test]
    fn fallbacks_must_exist_and_never_loop() {
        let e = parse(&format!(
            r#"{{{DEPLOYMENTS}, "routes": {{
                "x": {{"deployments": ["a"], "fallbacks": ["y"]}},
                "y": {{"deployments": ["b"], "fallbacks": ["z"]}},
                "z": {{"deployments": ["b"], "fallbacks": ["x", "w"]}}
            }}}}"#
        ))
        .unwrap_err();
        assert!(e.contains("fallbacks loop: x → y → z → x"), "{e}");
        assert!(
            e.contains("/routes/z/fallbacks/1: no route named \"w\""),
            "{e}"
        );
        let c = parse(&format!(
            r#"{{{DEPLOYMENTS}, "routes": {{
                "x": {{"deployments": ["a"], "fallbacks": ["y", "z"]}},
                "y": {{"deployments": ["b"], "fallbacks": ["z"]}},
                "z": {{"deployments": ["b"]}}
            }}}}"#
        ))
        .unwrap();
        assert_eq!(c.fallback_chain("x"), ["y", "z"]);
        assert!(c.fallback_chain("z").is_empty());
    }
}
