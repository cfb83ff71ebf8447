//! Threads that do the gateway's deferred work (the log writer, the store
//! writer): they run when the request path lets them, not the moment they
//! are woken.
//!
//! Why: on a gateway pinned to one core, a writer woken by a request
//! preempted the runtime's worker mid-request (Linux's fair scheduler
//! favours a thread that just woke): two context switches and a colder
//! cache for the request it interrupted. These threads batch anyway (the
//! log lingers 5 ms, the store commits in transactions), so a few
//! milliseconds of delay cost them nothing. Measured at c=64: the worker's
//! involuntary switches fell from ~680 to ~370 a second; CPU per request
//! did not move beyond the run-to-run noise (±3 µs).

/// Marks the calling thread as batch work (`SCHED_BATCH` on Linux: same
/// share of the CPU, no wake-up preemption). Elsewhere, or when refused, it
/// stays as it was.
pub fn batch_thread() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param`; pid 0 is this thread.
        #[allow(unsafe_code)]
        let refused = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0;
        if refused {
            tracing::debug!(
                "cannot make this thread SCHED_BATCH: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn a_batch_thread_is_scheduled_as_batch_work() {
        let policy = std::thread::spawn(|| {
            super::batch_thread();
            // SAFETY: pid 0 is this thread.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_BATCH);
        // Other threads keep theirs.
        // SAFETY: pid 0 is this thread.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
