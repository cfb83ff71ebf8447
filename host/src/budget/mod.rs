//! Budgets: spend limits, global or per route, deployment, caller or tag,
//! per UTC day or month.
//!
//! A request's cost is counted before its answer is known — an estimate
//! from the prompt's length and `max_tokens` at the route's highest price,
//! reserved on every budget it falls under — and corrected when its record
//! is finished (the reservation released, the billed cost of every attempt
//! added). So a burst cannot overrun a hard stop by more than the requests
//! already in flight. Crossing a configured fraction of a limit raises a
//! `budget_alert` event once per window and fraction.
//!
//! Spend is kept by budget name across reloads and read back from the
//! store for the current window at start, and for a budget a reload adds or
//! rescopes (what it counts changed), so neither resets anything.
//!
//! With Redis (`limits.backend: "redis"`), each settled cost is also added
//! to the budget's counter there (off the request path), and each
//! replica's reservations are published for the others to count (see
//! [`sync`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::config::{BudgetAction, BudgetConfig, BudgetPeriod};

mod sync;

/// What a budget's current window has spent and holds in reserve.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// The window the figures are for (a day or month number).
    window: i64,
    spent: f64,
    reserved: f64,
    /// What the other replicas hold in reserve, as of the last sync.
    others: f64,
    /// When that sync was.
    others_at: Option<std::time::Instant>,
    /// Fractions already alerted in this window.
    alerted: Vec<u32>,
}

impl Tally {
    /// What the other replicas hold, while the last sync is recent.
    fn others_fresh(&self) -> f64 {
        match self.others_at {
            Some(at) if at.elapsed() < sync::FRESH => self.others,
            _ => 0.0,
        }
    }
}

/// Every budget's definition and tally.
#[derive(Default)]
pub struct Budgets {
    defs: arc_swap::ArcSwap<BTreeMap<String, BudgetConfig>>,
    tallies: Arc<Mutex<HashMap<String, Tally>>>,
    /// Where the replicas add up their spend, with Redis.
    shared: Arc<arc_swap::ArcSwapOption<crate::ratelimit::shared::Shared>>,
    sync: Arc<sync::SyncState>,
}

/// Who and what a request is, as budgets select it.
pub struct Subject<'a> {
    pub route: &'a str,
    pub caller: Option<&'a str>,
    pub tags: &'a [String],
}

/// A request's hold on its budgets, released by [`Budgets::settle`].
#[derive(Debug, Default, Clone)]
pub struct Reservation {
    amount: f64,
    budgets: Vec<(String, i64)>,
    /// Deployment-scoped `reject` budgets over their hard limit, each with
    /// its deployment: those deployments are not tried, and a refusal names
    /// the budgets when nothing else serves.
    pub spent_deployment_budgets: Vec<(String, Exceeded)>,
    /// The budget to name when the request is refused for deployments that
    /// could serve it and were left out for their spent budgets: set by the
    /// pipeline from the deployments it left out on its current pass over
    /// the routes (cleared at each pass).
    pub refusal: Option<Exceeded>,
    /// A `cheapest` budget is spent: only the route's cheapest deployments.
    pub cheapest_only: bool,
}

impl Reservation {
    /// Whether a spent budget keeps `deployment` out.
    pub fn blocks(&self, deployment: &str) -> bool {
        self.spent_deployment_budgets
            .iter()
            .any(|(d, _)| d == deployment)
    }

    /// The deployments spent budgets keep out, once each.
    pub fn blocked_deployments(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .spent_deployment_budgets
            .iter()
            .map(|(d, _)| d.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Notes that `deployment`, which could serve the request, was left out
    /// for its spent budgets: it is out until the last of their windows
    /// ends, and a refusal names the budget of the deployment that is back
    /// first, so that the Retry-After it gives is when a retry may succeed.
    pub fn left_out(&mut self, deployment: &str, now_ms: i64) {
        let out_until = self
            .spent_deployment_budgets
            .iter()
            .filter(|(d, _)| d == deployment)
            .map(|(_, e)| (window_end(e.period, now_ms), e))
            .max_by_key(|(end, _)| *end);
        let Some((end, e)) = out_until else {
            return;
        };
        let sooner = self
            .refusal
            .as_ref()
            .is_none_or(|r| end < window_end(r.period, now_ms));
        if sooner {
            self.refusal = Some(e.clone());
        }
    }
}

/// A request refused by a spent budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub budget: String,
    pub spent: f64,
    pub limit: f64,
    pub period: BudgetPeriod,
}

/// An alert to log and store.
pub struct BudgetAlert {
    pub budget: String,
    pub detail: Value,
}

/// The day (UTC) of `ms`, and its month as `year * 12 + month0`.
fn windows(ms: i64) -> (i64, i64) {
    let day = ms.div_euclid(86_400_000);
    let (year, month, _) = crate::calendar::civil(day);
    (day, year * 12 + month - 1)
}

fn window_of(period: BudgetPeriod, ms: i64) -> i64 {
    let (day, month) = windows(ms);
    match period {
        BudgetPeriod::Day => day,
        BudgetPeriod::Month => month,
    }
}

/// The window's first millisecond (for reading spend back from the store).
pub fn window_start(period: BudgetPeriod, ms: i64) -> i64 {
    let day = ms.div_euclid(86_400_000);
    match period {
        BudgetPeriod::Day => day * 86_400_000,
        BudgetPeriod::Month => {
            let month = window_of(BudgetPeriod::Month, ms);
            let mut d = day;
            while window_of(BudgetPeriod::Month, (d - 1) * 86_400_000) == month {
                d -= 1;
            }
            d * 86_400_000
        }
    }
}

/// The first millisecond of the next window.
pub fn window_end(period: BudgetPeriod, ms: i64) -> i64 {
    let start = window_start(period, ms);
    match period {
        BudgetPeriod::Day => start + 86_400_000,
        BudgetPeriod::Month => window_start(period, start + 32 * 86_400_000),
    }
}

impl BudgetConfig {
    /// Whether its route, caller and tag (those it names) match the request.
    fn selects(&self, s: &Subject<'_>) -> bool {
        self.route.as_ref().is_none_or(|r| r == s.route)
            && self
                .caller
                .as_ref()
                .is_none_or(|c| Some(c.as_str()) == s.caller)
            && self
                .tag
                .as_ref()
                .is_none_or(|t| s.tags.iter().any(|x| x == t))
    }

    /// Whether a request (not yet at a deployment) falls under it.
    fn covers(&self, s: &Subject<'_>) -> bool {
        self.deployment.is_none() && self.selects(s)
    }

    /// Whether an attempt's cost on `deployment` counts against it.
    fn counts(&self, s: &Subject<'_>, deployment: &str) -> bool {
        self.selects(s) && self.deployment.as_ref().is_none_or(|d| d == deployment)
    }
}

impl Budgets {
    /// Budgets as configured; spend carried over by name (see
    /// [`Budgets::restore_from`] for budgets a reload adds or rescopes).
    pub fn set(&self, defs: BTreeMap<String, BudgetConfig>) {
        self.defs.store(Arc::new(defs));
    }

    /// Spend shared by the replicas through `shared` (`None`: this one's only).
    pub fn share_through(&self, shared: Option<Arc<crate::ratelimit::shared::Shared>>) {
        self.shared.store(shared);
    }

    pub fn is_empty(&self) -> bool {
        self.defs.load().is_empty()
    }

    /// Spend already recorded in the current windows (read from the store
    /// at start): `spent(budget)` is the store's sum for it.
    pub fn restore(&self, now_ms: i64, spent: impl Fn(&str, &BudgetConfig, i64) -> f64) {
        self.restore_where(&self.defs.load(), now_ms, |_, _| true, spent);
    }

    /// The spend of the current windows of `defs` read back from `store`
    /// (what it still queues committed first): at start for every budget
    /// (`before` `None`), and before a reload swaps `defs` in for those that
    /// are new or count something else (scope or period changed; `before`:
    /// the ones in force until then), so that no budget starts its window
    /// at $0 with spend on record, and its hard stop holds. The others keep
    /// their tallies (a new limit, alert or action changes no spend). The
    /// store is read before the tallies are locked: requests are never held
    /// up by it. Spend that cannot be read counts as 0, with a warning.
    pub fn restore_from(
        &self,
        store: &crate::store::Store,
        defs: &BTreeMap<String, BudgetConfig>,
        before: Option<&BTreeMap<String, BudgetConfig>>,
    ) {
        let same_count = |a: &BudgetConfig, b: &BudgetConfig| {
            (&a.route, &a.deployment, &a.caller, &a.tag, a.period)
                == (&b.route, &b.deployment, &b.caller, &b.tag, b.period)
        };
        let changed = |name: &str, def: &BudgetConfig| {
            before.is_none_or(|b| b.get(name).is_none_or(|old| !same_count(old, def)))
        };
        if !defs.iter().any(|(n, d)| changed(n, d)) {
            return;
        }
        store.flush(std::time::Duration::from_secs(5));
        let conn = match crate::store::query::open(store.path()) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("cannot read the budgets' spend back from the store: {e}");
                return;
            }
        };
        let now = crate::pipeline::outcome::now_ms();
        self.restore_where(defs, now, changed, |name, b, from| {
            crate::store::query::budget_spend(&conn, b, from).unwrap_or_else(|e| {
                tracing::warn!(budget = name, "cannot read the budget's spend back: {e}");
                0.0
            })
        });
    }

    /// The budgets in force.
    pub fn defs(&self) -> Arc<BTreeMap<String, BudgetConfig>> {
        self.defs.load_full()
    }

    fn restore_where(
        &self,
        defs: &BTreeMap<String, BudgetConfig>,
        now_ms: i64,
        which: impl Fn(&str, &BudgetConfig) -> bool,
        spent: impl Fn(&str, &BudgetConfig, i64) -> f64,
    ) {
        // Read first (a store query may take a while), then applied at once.
        let read: Vec<(&String, &BudgetConfig, i64, f64)> = defs
            .iter()
            .filter(|(n, d)| which(n, d))
            .map(|(name, def)| {
                let from = window_start(def.period, now_ms);
                (
                    name,
                    def,
                    window_of(def.period, now_ms),
                    spent(name, def, from),
                )
            })
            .collect();
        let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        for (name, def, window, amount) in read {
            let t = tallies.entry(name.clone()).or_default();
            // Requests in flight keep their reservations (settled later).
            let reserved = if t.window == window { t.reserved } else { 0.0 };
            *t = Tally {
                window,
                spent: amount,
                reserved,
                others: 0.0,
                others_at: None,
                alerted: def
                    .alert_at
                    .iter()
                    .filter(|f| amount >= def.limit_usd * **f)
                    .map(|f| (f * 1000.0) as u32)
                    .collect(),
            };
        }
    }

    /// Admits a request estimated to cost `estimate`: reserves it on every
    /// budget it falls under, or refuses it when a `reject` budget is spent.
    /// Deployment budgets only mark their deployments blocked or not.
    pub fn admit(
        &self,
        s: &Subject<'_>,
        estimate: f64,
        now_ms: i64,
    ) -> Result<Reservation, Exceeded> {
        let admitted = self.admit_here(s, estimate, now_ms);
        if !admitted.as_ref().is_ok_and(|r| r.budgets.is_empty()) {
            self.sync_shared();
        }
        admitted
    }

    fn admit_here(
        &self,
        s: &Subject<'_>,
        estimate: f64,
        now_ms: i64,
    ) -> Result<Reservation, Exceeded> {
        let defs = self.defs.load();
        let mut r = Reservation {
            amount: estimate,
            ..Reservation::default()
        };
        if defs.is_empty() {
            return Ok(r);
        }
        let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        for (name, def) in defs.iter() {
            let t = tallies.entry(name.clone()).or_default();
            let window = window_of(def.period, now_ms);
            if t.window != window {
                *t = Tally {
                    window,
                    ..Tally::default()
                };
            }
            let over = t.spent + t.reserved + t.others_fresh() >= def.limit_usd;
            if let Some(d) = &def.deployment {
                if over && def.action == BudgetAction::Reject && def.counts(s, d) {
                    r.spent_deployment_budgets.push((
                        d.clone(),
                        Exceeded {
                            budget: name.clone(),
                            spent: t.spent,
                            limit: def.limit_usd,
                            period: def.period,
                        },
                    ));
                }
                continue;
            }
            if !def.covers(s) {
                continue;
            }
            match (over, def.action) {
                (true, BudgetAction::Reject) => {
                    // Nothing reserved yet stays held.
                    for (held, w) in &r.budgets {
                        if let Some(t) = tallies.get_mut(held).filter(|t| t.window == *w) {
                            t.reserved = (t.reserved - estimate).max(0.0);
                        }
                    }
                    let t = &tallies[name];
                    return Err(Exceeded {
                        budget: name.clone(),
                        spent: t.spent,
                        limit: def.limit_usd,
                        period: def.period,
                    });
                }
                (true, BudgetAction::Cheapest) => r.cheapest_only = true,
                _ => {}
            }
            t.reserved += estimate;
            r.budgets.push((name.clone(), window));
        }
        Ok(r)
    }

    /// Releases `r` and adds what the request's attempts cost (`(deployment,
    /// cost)` of every billed attempt). Returns the alerts raised.
    pub fn settle(
        &self,
        r: &Reservation,
        s: &Subject<'_>,
        costs: &[(&str, f64)],
        now_ms: i64,
    ) -> Vec<BudgetAlert> {
        let defs = self.defs.load();
        let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        // Released first, even when a reload removed every budget meanwhile.
        for (name, window) in &r.budgets {
            if let Some(t) = tallies.get_mut(name).filter(|t| t.window == *window) {
                t.reserved = (t.reserved - r.amount).max(0.0);
            }
        }
        if defs.is_empty() {
            return Vec::new();
        }
        let mut alerts = Vec::new();
        let mut charged = Vec::new();
        for (name, def) in defs.iter() {
            let cost: f64 = costs
                .iter()
                .filter(|(d, _)| def.counts(s, d))
                .map(|(_, c)| c)
                .sum();
            if cost <= 0.0 {
                continue;
            }
            let t = tallies.entry(name.clone()).or_default();
            let window = window_of(def.period, now_ms);
            if t.window != window {
                *t = Tally {
                    window,
                    ..Tally::default()
                };
            }
            t.spent += cost;
            charged.push((name.clone(), window, cost));
            for f in &def.alert_at {
                let key = (f * 1000.0) as u32;
                if t.spent >= def.limit_usd * f && !t.alerted.contains(&key) {
                    t.alerted.push(key);
                    alerts.push(BudgetAlert {
                        budget: name.clone(),
                        detail: json!({
                            "fraction": f, "spent_usd": t.spent, "limit_usd": def.limit_usd,
                            "period": def.period, "action": def.action,
                        }),
                    });
                }
            }
        }
        drop(tallies);
        if !r.budgets.is_empty() || !charged.is_empty() {
            self.sync_shared();
        }
        if let Some(shared) = self.shared.load_full()
            && !charged.is_empty()
        {
            let tallies = self.tallies.clone();
            let added: Vec<(String, i64, f64)> = charged.clone();
            shared.add_spend(
                charged
                    .into_iter()
                    .map(|(name, window, cost)| (format!("{name}:{window}"), cost))
                    .collect(),
                move |totals| {
                    let mut tallies = tallies.lock().unwrap_or_else(|p| p.into_inner());
                    for ((name, window, _), total) in added.iter().zip(totals) {
                        if let Some(t) = tallies.get_mut(name).filter(|t| t.window == *window) {
                            // Never lower: a Redis that lost its data must
                            // not forget this replica's own spend.
                            t.spent = t.spent.max(total);
                        }
                    }
                },
            );
        }
        alerts
    }

    /// `GET /admin/budgets`.
    pub fn view(&self, now_ms: i64) -> Value {
        let defs = self.defs.load();
        let tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        let data: Vec<Value> = defs
            .iter()
            .map(|(name, def)| {
                let t = tallies
                    .get(name)
                    .filter(|t| t.window == window_of(def.period, now_ms))
                    .cloned()
                    .unwrap_or_default();
                json!({
                    "name": name,
                    "scope": {"route": def.route, "deployment": def.deployment, "caller": def.caller, "tag": def.tag},
                    "period": def.period,
                    "window_start_ms": window_start(def.period, now_ms),
                    "limit_usd": def.limit_usd,
                    "spent_usd": t.spent,
                    "reserved_usd": t.reserved,
                    "reserved_elsewhere_usd": t.others_fresh(),
                    "fraction": if def.limit_usd > 0.0 { t.spent / def.limit_usd } else { 0.0 },
                    "action": def.action,
                    "alert_at": def.alert_at,
                })
            })
            .collect();
        json!({ "data": data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: f64, action: BudgetAction) -> BudgetConfig {
        BudgetConfig {
            route: None,
            deployment: None,
            caller: None,
            tag: None,
            period: BudgetPeriod::Day,
            limit_usd: limit,
            alert_at: vec![0.5, 0.8, 1.0],
            action,
        }
    }

    const NOW: i64 = 1_795_400_000_000;

    /// A reload reads back from the store only the budgets it adds or that
    /// now count something else; a new limit keeps the spend tallied.
    #[test]
    fn a_reload_rereads_only_budgets_that_count_something_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("db.sqlite"));
        let now = crate::pipeline::outcome::now_ms();
        let b = Budgets::default();
        let old = BTreeMap::from([
            ("kept".to_string(), budget(10.0, BudgetAction::Alert)),
            ("rescoped".to_string(), budget(10.0, BudgetAction::Alert)),
        ]);
        b.set(old.clone());
        let r = b.admit(&subject(), 0.0, now).unwrap();
        b.settle(&r, &subject(), &[("d", 0.5)], now);
        let mut new = old.clone();
        new.get_mut("kept").unwrap().limit_usd = 20.0;
        new.get_mut("rescoped").unwrap().route = Some("chat".into());
        new.insert("added".into(), budget(10.0, BudgetAction::Alert));
        // The store holds no spend: what is read back is 0.
        b.restore_from(&store, &new, Some(&old));
        b.set(new);
        let view = b.view(now);
        let spent = |name: &str| {
            view["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap()["spent_usd"]
                .as_f64()
                .unwrap()
        };
        assert_eq!(spent("kept"), 0.5);
        assert_eq!(spent("rescoped"), 0.0);
        assert_eq!(spent("added"), 0.0);
    }

    fn subject() -> Subject<'static> {
        Subject {
            route: "chat",
            caller: None,
            tags: &[],
        }
    }

    #[test]
    fn windows_are_utc_days_and_months() {
        // 2026-11-23T00:00:00Z
        let nov23 = 1_795_392_000_000;
        assert_eq!(window_start(BudgetPeriod::Day, nov23 + 5_000), nov23);
        // 2026-11-01T00:00:00Z
        assert_eq!(
            window_start(BudgetPeriod::Month, nov23 + 5_000),
            1_793_491_200_000
        );
        assert_eq!(windows(0).1, 1970 * 12);
        // 2026-12-01T00:00:00Z
        assert_eq!(window_end(BudgetPeriod::Month, nov23), 1_796_083_200_000);
        // 2024-02-29 is in February.
        assert_eq!(windows(1_709_164_800_000).1, 2024 * 12 + 1);
    }

    #[test]
    fn a_hard_stop_refuses_once_spent_plus_in_flight_reach_the_limit() {
        let b = Budgets::default();
        b.set(BTreeMap::from([(
            "daily".into(),
            budget(1.0, BudgetAction::Reject),
        )]));
        // Three in flight at 0.3 each: the fourth would pass 1.0.
        let held: Vec<_> = (0..4).map(|_| b.admit(&subject(), 0.3, NOW)).collect();
        assert!(held[..3].iter().all(Result::is_ok));
        assert!(held[3].is_ok(), "0.9 reserved is still under 1.0");
        let refused = b.admit(&subject(), 0.3, NOW).unwrap_err();
        assert_eq!(refused.budget, "daily");
        // Settled at their real (smaller) cost: room again.
        let mut alerts = Vec::new();
        for r in held.into_iter().flatten() {
            alerts.extend(b.settle(&r, &subject(), &[("d", 0.1)], NOW));
        }
        assert!(b.admit(&subject(), 0.3, NOW).is_ok());
        // 0.4 spent: the 50 % alert is not due yet; 0.2 more is.
        assert!(alerts.is_empty());
        let r = b.admit(&subject(), 0.0, NOW).unwrap();
        let alerts = b.settle(&r, &subject(), &[("d", 0.2)], NOW);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].detail["fraction"], 0.5);
        // Once per window: the next day starts afresh.
        assert!(b.admit(&subject(), 0.3, NOW + 86_400_000).is_ok());
    }

    #[test]
    fn deployment_budgets_block_their_deployment_and_cheapest_narrows_the_route() {
        let b = Budgets::default();
        let mut dep = budget(0.5, BudgetAction::Reject);
        dep.deployment = Some("pricey".into());
        let mut soft = budget(0.5, BudgetAction::Cheapest);
        soft.route = Some("chat".into());
        b.set(BTreeMap::from([("dep".into(), dep), ("soft".into(), soft)]));
        let r = b.admit(&subject(), 0.0, NOW).unwrap();
        assert!(r.blocked_deployments().is_empty() && !r.cheapest_only);
        b.settle(&r, &subject(), &[("pricey", 0.6)], NOW);
        let r = b.admit(&subject(), 0.0, NOW).unwrap();
        assert_eq!(r.blocked_deployments(), vec!["pricey"]);
        assert!(r.blocks("pricey") && !r.blocks("cheap"));
        assert_eq!(r.spent_deployment_budgets[0].0, "pricey");
        assert_eq!(r.spent_deployment_budgets[0].1.budget, "dep");
        assert!(r.cheapest_only);
    }

    /// A refusal names the budget that keeps out the deployment back
    /// first: a deployment is out until the last of its spent budgets'
    /// windows ends, and only the deployments left out count.
    #[test]
    fn a_refusal_names_when_a_left_out_deployment_is_back() {
        let spent = |budget: &str, period| Exceeded {
            budget: budget.into(),
            spent: 1.0,
            limit: 1.0,
            period,
        };
        let mut r = Reservation {
            spent_deployment_budgets: vec![
                ("a".into(), spent("a-day", BudgetPeriod::Day)),
                ("a".into(), spent("a-month", BudgetPeriod::Month)),
                ("b".into(), spent("b-day", BudgetPeriod::Day)),
                ("elsewhere".into(), spent("other-day", BudgetPeriod::Day)),
            ],
            ..Reservation::default()
        };
        // Mid-month: the month ends after the day.
        let now = NOW;
        assert!(window_end(BudgetPeriod::Month, now) > window_end(BudgetPeriod::Day, now));
        r.left_out("a", now);
        assert_eq!(r.refusal.as_ref().unwrap().budget, "a-month");
        r.left_out("b", now);
        assert_eq!(r.refusal.as_ref().unwrap().budget, "b-day");
        let mut only_a = Reservation {
            spent_deployment_budgets: r.spent_deployment_budgets.clone(),
            ..Reservation::default()
        };
        only_a.left_out("a", now);
        only_a.left_out("unknown", now);
        assert_eq!(only_a.refusal.unwrap().budget, "a-month");
    }
}
