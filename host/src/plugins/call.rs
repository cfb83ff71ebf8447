//! How a plugin call runs without ever stalling the gateway.
//!
//! Every call is an async wasmtime call on its own fiber, under a wall-clock
//! deadline that covers everything it runs: instantiation, guest code
//! (interrupted at the first epoch tick past the deadline) and WASI host calls
//! (a guest asleep in `poll` is dropped when the deadline's timer fires).
//! Waiting for an instance or a plugin-runtime turn is covered by the
//! deadline too for strategies and evaluators (their roles fail open); an
//! adapter call, which nothing can replace, may wait `plugins.queue_ms` in a
//! burst before its deadline starts, and only then is the request refused
//! (503, the gateway is saturated).
//!
//! Where it runs is measured, not declared:
//! - A plugin that answers quickly is polled **inline**, on the request's own
//!   task: no thread hop, a few microseconds.
//! - A call still running at the first epoch tick yields; its future then
//!   moves to the **plugin runtime** (its own threads, one per core, at
//!   least two).
//! - [`SLOW_STREAK`](super::placement::SLOW_STREAK) calls in a row that run
//!   longer than [`SLOW_CALL`](super::placement::SLOW_CALL) (a call that yielded counts its inline
//!   poll plus the rest's thread CPU, or as slow if it yields twice) mark
//!   their plugin slow for
//!   [`SLOW_FOR`](super::placement::SLOW_FOR): its calls go to the
//!   plugin runtime directly. So a spinning or sleeping plugin costs only its
//!   own requests: the runtime's workers keep serving everything else. One
//!   slow call is not enough: under load a few percent of 5 µs calls are
//!   descheduled for longer than that, and every offloaded call costs two
//!   thread hand-offs.
//! - Even so, wall time is not proof. An offloaded call that finishes in one
//!   poll using less than [`SLOW_CALL`](super::placement::SLOW_CALL) of thread CPU time (measured there
//!   only: it costs a system call) clears the mark at once, and calls still
//!   waiting for a turn go back inline: a fast plugin marked by bad luck
//!   recovers on its next call.
//! - One plugin's offloaded calls use at most half the plugin runtime's
//!   threads, so a spinning plugin never makes another plugin's calls queue
//!   behind it.
//!
//! Faults (traps, deadlines, out-of-memory) count towards quarantine: a
//! plugin that faults `faults` times within `window` is not called for
//! `cooldown`, and its role's fail-open rule applies meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use wasmtime::{Store, Trap};

use super::abi::Exports;
use super::host_api::{CallDeadline, HostState};
use super::placement::{plugin_runtime, plugin_turns, slow_call};
use super::pool::{Reserved, Slot};
use super::{Plugin, PluginError};

/// How long a call may wait to start, and how long it may run.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    /// How long it may run once it starts.
    run: Duration,
    /// When the call was made, or got its instance after waiting for one: an
    /// inline call starts then.
    created: Instant,
    /// Waiting for an instance or a turn on the plugin runtime ends here.
    pub(crate) wait_until: Instant,
    /// When set, no call runs past it, however late it started.
    overall: Option<Instant>,
    /// The deadline cell of the instance, when known before the call runs.
    cell: Option<CallDeadline>,
}

impl Budget {
    /// The deadline of a call that starts at `start`, in the instance's own
    /// cell when the call has one (no allocation per call).
    fn deadline_from(&self, start: Instant) -> CallDeadline {
        let deadline = start + self.run;
        let deadline = self.overall.map_or(deadline, |o| o.min(deadline));
        match &self.cell {
            Some(cell) => {
                cell.set(deadline);
                cell.clone()
            }
            None => CallDeadline::at(deadline),
        }
    }

    /// Uses the deadline cell of the instance the call will run on.
    pub(crate) fn on(mut self, reserved: &Reserved) -> Self {
        if let Reserved::Idle(slot) = reserved {
            self.cell = Some(slot.store.data().deadline.clone());
        }
        self
    }
}

/// One call into a plugin, with owned arguments (it may move to another thread).
/// `Ok(None)` from `run` means the instance does not export what the call needs.
pub(crate) trait Call: Send + 'static {
    type Output: Send + 'static;
    /// Its name in traces.
    const NAME: &'static str;
    fn run<'a>(
        self,
        store: &'a mut Store<HostState>,
        exports: &'a Exports,
    ) -> impl Future<Output = wasmtime::Result<Option<Self::Output>>> + Send + 'a;
}

/// Declares a [`Call`]: its owned arguments and the `Exports` method it runs.
/// (Its future is a plain `async` block, stored inline in the call's boxed
/// future: no second allocation per call.)
macro_rules! call {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? } -> $out:ty = |$s:ident, $store:ident, $exports:ident| $body:expr) => {
        $(#[$doc])*
        pub(crate) struct $name { $($(#[$fdoc])* pub(crate) $field: $ty),* }
        impl $crate::plugins::call::Call for $name {
            type Output = $out;
            const NAME: &'static str = stringify!($name);
            fn run<'a>(
                self,
                $store: &'a mut wasmtime::Store<$crate::plugins::host_api::HostState>,
                $exports: &'a $crate::plugins::abi::Exports,
            ) -> impl std::future::Future<Output = wasmtime::Result<Option<$out>>> + Send + 'a {
                let $s = self;
                async move { $body }
            }
        }
    };
}
pub(crate) use call;

impl Plugin {
    /// Runs `call` on a pooled instance under this plugin's deadline. (Not
    /// an `async fn`: each layer of future is copied whole when made.)
    pub(crate) fn call<'a, C: Call>(
        self: &'a Arc<Self>,
        request_id: &'a Arc<str>,
        call: C,
    ) -> impl Future<Output = Result<C::Output, PluginError>> + Send + 'a {
        self.call_with_deadline(request_id, call, self.deadline)
    }

    pub(crate) async fn call_with_deadline<C: Call>(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        call: C,
        run: Duration,
    ) -> Result<C::Output, PluginError> {
        if let Some(left) = self.stats.quarantined_for() {
            return Err(PluginError::Quarantined {
                plugin: self.id.to_string(),
                remaining_ms: left.as_millis() as u64,
            });
        }
        let begun = Instant::now();
        let mut budget = self.budget_from(run, begun);
        let reserved = match self.pool.reserve() {
            Err(e) if e.is_saturation() => {
                let reserved = Box::pin(self.pool.reserve_by(budget.wait_until)).await?;
                // An inline call's deadline counts from here, not from
                // before the wait (capped by `overall` where waiting counts).
                budget.created = Instant::now();
                reserved
            }
            other => other?,
        };
        let budget = budget.on(&reserved);
        let plugin = self.clone();
        let request_id = request_id.clone();
        let work = move |deadline: CallDeadline| async move {
            let _running = plugin.ticker.enter();
            let slot = match reserved {
                Reserved::Idle(slot) => slot,
                // Boxed: instantiation's future is large, and this one is
                // moved to the heap (and maybe to another thread) whole.
                Reserved::New(place) => Box::pin(plugin.pool.instantiate(place, &deadline)).await?,
            };
            let (slot, result) = plugin.run_on(slot, &request_id, deadline, call).await;
            if let Some(slot) = slot {
                plugin.pool.give_back(slot);
            }
            result
        };
        let span = crate::telemetry::plugin_span(&self.id, C::NAME);
        let result = tracing::Instrument::instrument(self.drive(work, budget), span.clone()).await;
        if let Err(e) = &result {
            if crate::telemetry::enabled() {
                crate::telemetry::fail(&span, e.to_string());
            }
            self.note_failure(e);
            self.stats
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.stats
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let took = begun.elapsed();
        self.stats
            .call_ns
            .fetch_add(took.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        self.stats.latency.observe(took);
        result
    }

    /// The budget of a call of `run` starting now.
    pub(crate) fn budget(&self, run: Duration) -> Budget {
        self.budget_from(run, Instant::now())
    }

    /// The budget of a call of `run` made at `now` (a clock read saved
    /// where the caller has one).
    fn budget_from(&self, run: Duration, now: Instant) -> Budget {
        match self.queue {
            Some(queue) => Budget {
                run,
                created: now,
                wait_until: now + queue,
                overall: None,
                cell: None,
            },
            None => Budget {
                run,
                created: now,
                wait_until: now + run,
                overall: Some(now + run),
                cell: None,
            },
        }
    }

    /// Runs a call on a given instance (v0.1 streams keep theirs); the slot
    /// comes back when it is still usable.
    pub(crate) async fn run_on<C: Call>(
        &self,
        mut slot: Slot,
        request_id: &Arc<str>,
        deadline: CallDeadline,
        call: C,
    ) -> (Option<Slot>, Result<C::Output, PluginError>) {
        {
            let data = slot.store.data_mut();
            data.request_id = request_id.clone();
            data.deadline = deadline;
        }
        slot.store.set_epoch_deadline(1);
        let Slot { store, exports, .. } = &mut slot;
        // A host function that panics unwinds through the guest: it ends this
        // call like a trap instead of the request's task.
        let ran = std::panic::AssertUnwindSafe(call.run(store, exports))
            .catch_unwind()
            .await;
        match ran {
            Ok(Ok(Some(out))) => (Some(slot), Ok(out)),
            Ok(Ok(None)) => (
                Some(slot),
                Err(PluginError::WrongKind {
                    plugin: self.id.to_string(),
                    expected: None,
                    actual: self.kind,
                }),
            ),
            Ok(Err(e)) => {
                let error = classify_trap(&self.id, &slot.store, self.deadline, e);
                tracing::warn!(request_id = %request_id, plugin = %self.id, "discarding trapped plugin instance");
                (None, Err(error))
            }
            Err(panic) => (
                None,
                Err(PluginError::Trap {
                    plugin: self.id.to_string(),
                    message: format!(
                        "a host function panicked during the call: {}",
                        panic_text(&panic)
                    ),
                }),
            ),
        }
    }

    /// Polls a call inline once; moves it to the plugin runtime when it
    /// yields or when the plugin is known to be slow. `work` makes the call's
    /// future given its deadline, once it is about to run.
    pub(crate) async fn drive<R, F, W>(&self, work: F, budget: Budget) -> Result<R, PluginError>
    where
        R: Send + 'static,
        F: FnOnce(CallDeadline) -> W + Send + 'static,
        W: Future<Output = Result<R, PluginError>> + Send + 'static,
    {
        if self.stats.offloading() {
            return Box::pin(self.drive_offloaded(Err(work), budget)).await;
        }
        // The inline path is kept small: its future is moved whole into the
        // caller's, and the slow path's timers and semaphores are boxed.
        let t0 = budget.created;
        let deadline = budget.deadline_from(t0);
        let mut call = Box::pin(work(deadline.clone()));
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(result) => {
                self.stats.note_inline(&self.id, t0.elapsed());
                result
            }
            // It yielded at an epoch tick or waits in WASI: this call
            // finishes on the plugin runtime, and is timed there (a tick can
            // land early in a 1 ms call as well as in a 5 µs one: only its
            // whole time says slow).
            Poll::Pending => {
                let begun = self.begun(call, deadline, t0.elapsed());
                Box::pin(self.drive_offloaded::<R, F, W>(Ok(begun), budget)).await
            }
        }
    }

    /// A call whose inline poll ran `ran` and yielded. Already slow: noted
    /// at once (concurrent calls must not all start inline before the
    /// first one finishes); otherwise its whole time is noted when it ends.
    fn begun<W>(&self, call: Pin<Box<W>>, deadline: CallDeadline, ran: Duration) -> Begun<W> {
        let ran = if ran > slow_call() {
            self.stats.note_inline(&self.id, ran);
            None
        } else {
            Some(ran)
        };
        Begun {
            call,
            deadline,
            ran,
        }
    }

    /// The slow path of [`drive`](Self::drive): a call that began inline and
    /// yielded (`Ok`), or one not begun, of a plugin known to be slow (`Err`),
    /// waits for a turn and runs on the plugin runtime.
    async fn drive_offloaded<R, F, W>(
        &self,
        mut call: Result<Begun<W>, F>,
        budget: Budget,
    ) -> Result<R, PluginError>
    where
        R: Send + 'static,
        F: FnOnce(CallDeadline) -> W + Send + 'static,
        W: Future<Output = Result<R, PluginError>> + Send + 'static,
    {
        loop {
            // Waiting for a turn is bounded by the budget's queue time; the
            // deadline of a call already begun stops meanwhile (unless the
            // role's deadline covers waiting too).
            let waiting = Instant::now();
            let recovered = self.stats.recovered.notified();
            let fresh = call.is_err();
            let turn = tokio::select! {
                biased;
                turn = tokio::time::timeout_at(
                    budget.wait_until.into(),
                    self.stats.turns.clone().acquire_owned(),
                ) => turn,
                // Found fast again while this call waited: run it inline.
                () = recovered, if fresh => {
                    let Err(work) = call else { unreachable!("fresh") };
                    let now = Instant::now();
                    let deadline = budget.deadline_from(now);
                    let mut begun = Box::pin(work(deadline.clone()));
                    let first = std::future::poll_fn(|cx| Poll::Ready(begun.as_mut().poll(cx))).await;
                    match first {
                        Poll::Ready(result) => {
                            self.stats.note_inline(&self.id, now.elapsed());
                            return result;
                        }
                        Poll::Pending => {
                            call = Ok(self.begun(begun, deadline, now.elapsed()));
                            continue;
                        }
                    }
                }
            };
            let turn = match turn {
                Ok(Ok(turn)) => turn,
                Ok(Err(_)) => unreachable!("the semaphore is never closed"),
                // Waiting for a turn is saturation, not this call's fault.
                Err(_) => {
                    return Err(PluginError::Busy {
                        plugin: self.id.to_string(),
                        max: plugin_turns(),
                        what: "calls on the plugin runtime",
                    });
                }
            };
            let (work, deadline, inline) = match call {
                Ok(Begun {
                    call,
                    deadline,
                    ran,
                }) => {
                    if budget.overall.is_none() {
                        deadline.extend(waiting.elapsed());
                    }
                    (call, deadline, ran)
                }
                Err(work) => {
                    let deadline = budget.deadline_from(Instant::now());
                    (Box::pin(work(deadline.clone())), deadline, None)
                }
            };
            return self.offload(work, deadline, turn, fresh, inline).await;
        }
    }

    /// Runs the rest of a call on the plugin runtime, holding `turn`.
    /// `inline` is the time a call begun inline ran there before it yielded,
    /// if its streak is still to be noted.
    async fn offload<R: Send + 'static>(
        &self,
        mut work: Pin<Box<impl Future<Output = Result<R, PluginError>> + Send + 'static>>,
        deadline: CallDeadline,
        turn: tokio::sync::OwnedSemaphorePermit,
        fresh: bool,
        inline: Option<Duration>,
    ) -> Result<R, PluginError> {
        let mut task = plugin_runtime().spawn(async move {
            // The CPU of the rest of the call if it completes in one poll;
            // `None` if it yields again (two ticks or a wait: slow).
            let cpu0 = thread_cpu_time();
            let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
            let (out, used) = match first {
                Poll::Ready(out) => (out, Some(thread_cpu_time().saturating_sub(cpu0))),
                Poll::Pending => (work.await, None),
            };
            drop(turn);
            (out, used)
        });
        match tokio::time::timeout_at(deadline.get().into(), &mut task).await {
            Ok(Ok((result, used))) => {
                match inline {
                    // Begun inline: its whole time decides the streak.
                    Some(ran) => {
                        let total = used.map_or(Duration::MAX, |used| ran.saturating_add(used));
                        self.stats.note_inline(&self.id, total);
                    }
                    // A fresh call that completes in its first poll on little
                    // CPU shows the plugin is fast.
                    None if fresh && used.is_some_and(|used| used <= slow_call()) => {
                        self.stats.note_fast_offloaded(&self.id);
                    }
                    None => {}
                }
                result
            }
            Ok(Err(e)) => Err(PluginError::Trap {
                plugin: self.id.to_string(),
                message: format!("the call's task failed: {e}"),
            }),
            Err(_) => {
                // Dropping the future drops the instance with it.
                task.abort();
                Err(PluginError::Deadline {
                    plugin: self.id.to_string(),
                    deadline_ms: self.deadline.as_millis() as u64,
                })
            }
        }
    }

    fn note_failure(&self, e: &PluginError) {
        let kind = match e {
            PluginError::Deadline { .. } => Some(&self.stats.timeouts),
            PluginError::Trap { .. } => Some(&self.stats.traps),
            _ => None,
        };
        if let Some(count) = kind {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if e.is_fault() {
            self.stats.record_fault(&self.id, &self.quarantine, e);
        }
    }
}

/// A call begun inline that yielded: the rest runs on the plugin runtime.
struct Begun<W> {
    call: Pin<Box<W>>,
    deadline: CallDeadline,
    /// Wall time of its inline poll, unless already noted as slow.
    ran: Option<Duration>,
}

/// CPU time this thread has used (a system call: ~0.5 µs, so offloaded
/// calls only).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Linux kernel since 2.6.12 supports.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Names the way a call died: deadline, memory cap (known from the limiter,
/// not from the error's text), or any other trap.
pub(crate) fn classify_trap(
    plugin: &str,
    store: &Store<HostState>,
    budget: Duration,
    e: wasmtime::Error,
) -> PluginError {
    let plugin = plugin.to_string();
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return PluginError::Deadline {
            plugin,
            deadline_ms: budget.as_millis() as u64,
        };
    }
    if let Some(exhausted) = store.data().limiter.exhausted() {
        return PluginError::OutOfMemory {
            plugin,
            message: exhausted.to_string(),
        };
    }
    PluginError::Trap {
        plugin,
        message: format!("{e:#}"),
    }
}
