//! Shadow strategies (`routes.<m>.shadow_strategies`): strategies that see
//! every request of a route beside the live one, after its answer and off
//! its path, and never route. Each one's first choice is recorded next to
//! the live strategy's and the deployment that served, so `GET
//! /admin/shadow` (and `switchyard replay`, on recorded traffic) can say how
//! often a new strategy would have agreed and what it would have cost.
//!
//! A shadow never costs a request anything it can feel: the candidates are
//! captured once at ordering time (a clone of what the live strategy saw),
//! the calls run in a task spawned when the request's record completes, and
//! at most [`MAX_PENDING`] such tasks run at once — beyond that a decision
//! is dropped (counted and logged), never queued behind live traffic.

pub mod replay;
pub mod report;
pub mod whatif;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::domain::{Candidate, Kind, RequestSummary};
use crate::plugins::Registry;
use crate::store::{Row, ShadowRow, Store};

/// Shadow tasks running at once, at most.
pub const MAX_PENDING: usize = 64;

static PENDING: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Decisions dropped because [`MAX_PENDING`] tasks were already running.
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// What a request's shadows need, captured when its live order was made.
pub struct Pending {
    pub registry: Arc<Registry>,
    pub route: String,
    pub live_strategy: Option<String>,
    pub strategies: Arc<[String]>,
    pub summary: RequestSummary,
    pub candidates: Vec<Candidate>,
    /// The live order's first deployment (none when nothing was eligible).
    pub live_choice: Option<String>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("route", &self.route)
            .field("strategies", &self.strategies)
            .field("live_choice", &self.live_choice)
            .finish_non_exhaustive()
    }
}

/// How the request went, for the decision rows.
pub struct Served {
    pub request_id: Arc<str>,
    pub ts_ms: i64,
    /// The deployment whose answer the client got.
    pub deployment: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cost: Option<f64>,
}

/// Runs `pending`'s strategies in a task of their own and stores each
/// one's decision. Outside a runtime (a record dropped at shutdown) or over
/// the cap, the decisions are dropped.
pub fn spawn(pending: Box<Pending>, served: Served, store: Option<Store>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if PENDING.fetch_add(1, Relaxed) >= MAX_PENDING {
        PENDING.fetch_sub(1, Relaxed);
        let n = DROPPED.fetch_add(1, Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(route = %pending.route, dropped = n,
                "shadow strategies are behind: decisions dropped (live traffic is not affected)");
        }
        return;
    }
    handle.spawn(async move {
        let _done = Done;
        for row in decide(&pending, &served).await {
            tracing::debug!(request_id = %served.request_id, route = %row.route,
                plugin = %row.strategy, choice = ?row.choice, live = ?row.live_choice, "shadow decision");
            if let Some(store) = &store {
                store.record(Row::Shadow(row));
            }
        }
    });
}

/// Gives a task's place back however it ends.
struct Done;

impl Drop for Done {
    fn drop(&mut self) {
        PENDING.fetch_sub(1, Relaxed);
    }
}

/// Each shadow strategy's first choice (or why it has none).
async fn decide(p: &Pending, served: &Served) -> Vec<ShadowRow> {
    let mut rows = Vec::with_capacity(p.strategies.len());
    for id in p.strategies.iter() {
        let (choice, error) = if p.candidates.is_empty() {
            (None, None)
        } else {
            match choose(p, id, &served.request_id).await {
                Ok(i) => (Some(p.candidates[i].deployment.clone()), None),
                Err(e) => {
                    tracing::debug!(request_id = %served.request_id, plugin = %id, "shadow strategy failed: {e}");
                    (None, Some(e))
                }
            }
        };
        rows.push(ShadowRow {
            ts_ms: served.ts_ms,
            request_id: served.request_id.to_string(),
            route: p.route.clone(),
            strategy: id.clone(),
            live_strategy: p.live_strategy.clone(),
            live_choice: p.live_choice.clone(),
            choice,
            served: served.deployment.clone(),
            prompt_tokens: served.prompt_tokens,
            completion_tokens: served.completion_tokens,
            cost: served.cost,
            error,
        });
    }
    rows
}

/// The index of the strategy's first candidate, its order checked as the
/// live one's is.
async fn choose(p: &Pending, id: &str, request_id: &Arc<str>) -> Result<usize, String> {
    let plugin = p
        .registry
        .get(id, Kind::Strategy)
        .map_err(|e| e.to_string())?;
    let order = plugin
        .order(request_id, p.summary.clone(), p.candidates.clone())
        .await
        .map_err(|e| e.to_string())?;
    let order = crate::pipeline::validate_order(order, p.candidates.len())?;
    order
        .first()
        .copied()
        .ok_or_else(|| "the strategy returned an empty order".to_string())
}
