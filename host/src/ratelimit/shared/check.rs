//! The one round trip a request makes to Redis before an attempt: a single
//! `EVALSHA` of `lua/reserve.lua` that, atomically and on Redis's clock,
//!
//! - takes the request from its client key's windows (on the request's
//!   first check only; refused there, nothing is taken anywhere),
//! - checks the deployment's in-flight cap and adds a lease under it,
//! - checks and takes the deployment's windows and those of the first
//!   candidate upstream key that has room,
//! - reports the cool-downs other replicas published (a key's 429, a
//!   tripped circuit), and hands the one half-open probe of a circuit whose
//!   cool-down ended to the first check that is admitted.
//!
//! Corrections (real token counts) and give-backs are sent off the request
//! path.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{Lease, Shared};
use crate::ratelimit::{Kind, Limits, Refused};

/// What one check asks of the shared state.
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    /// `d` (a deployment) or `c` (a client key, checked on its own).
    pub scope: &'a str,
    pub name: &'a str,
    pub limits: Limits,
    /// Tokens the request is estimated to use.
    pub tokens: u64,
    /// The deployment's in-flight cap and the length of a lease under it.
    pub cap: Option<(u32, Duration)>,
    /// The upstream keys' own limits, and the candidates' fingerprints in
    /// this replica's rotation.
    pub keys: Option<(Limits, &'a [String])>,
    /// The client key's name, limits and the tokens they count for this
    /// request, on the request's first check.
    pub caller: Option<(&'a str, Limits, u64)>,
    /// A circuit's probe window: a check admitted once its shared cool-down
    /// ended claims the probe for this long.
    pub probe: Option<Duration>,
}

/// What a shared reservation holds: each limit's hash, bucket and amount.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    taken: Vec<(String, u64, u64, bool)>,
}

/// A shared check's answer.
#[derive(Debug)]
pub struct Checked {
    /// What the client key's windows hold of this request (taken whatever
    /// the deployment's verdict, unless the key itself was refused).
    pub caller: Option<Reservation>,
    /// Cool-downs other replicas saw: `circuit` or `key:<fingerprint>`, and
    /// how long each has left.
    pub cooling: Vec<(String, Duration)>,
    pub verdict: Verdict,
}

/// The deployment's side of a check.
#[derive(Debug)]
pub enum Verdict {
    Admitted {
        reservation: Reservation,
        /// 0..1: the tightest limit after this request.
        headroom: f32,
        /// Its place under the in-flight cap, when it has one.
        lease: Option<Lease>,
        /// The candidate key whose windows had room (its index among those
        /// passed), when key windows were checked.
        key_index: Option<usize>,
        /// This request probes the circuit for every replica.
        probe: bool,
    },
    /// Every candidate key is at one of its limits: free again after this.
    KeysBusy(Duration),
    Refused(Refused),
    /// At its in-flight cap across the replicas (the cap).
    AtCapacity(u32),
    /// The client key is at one of its limits: nothing was taken.
    CallerRefused(Refused),
    /// Redis is down, slow or erroring: use the local limiter.
    Unavailable,
}

impl Checked {
    fn unavailable() -> Self {
        Self {
            caller: None,
            cooling: Vec::new(),
            verdict: Verdict::Unavailable,
        }
    }
}

impl Shared {
    fn window_key(&self, scope: &str, name: &str, kind: Kind) -> String {
        format!("{}:lim:{scope}:{name}:{}", self.prefix, kind.name())
    }

    /// Checks and takes one request and its tokens from every limit `c`
    /// names (see the module's doc). One round trip, at most
    /// `redis.timeout_ms`.
    pub async fn reserve(self: &Arc<Self>, c: Check<'_>) -> Checked {
        if self.now_ms() < self.skip_until_ms.load(Relaxed) {
            return Checked::unavailable();
        }
        let Some(conn) = self.conn.load_full() else {
            return Checked::unavailable();
        };
        let windows = windows_of(c.limits);
        let (key_windows, candidates): (Vec<(Kind, u64, u64)>, &[String]) = match c.keys {
            Some((l, fps)) if !l.is_empty() && !fps.is_empty() => (windows_of(l), fps),
            _ => (Vec::new(), &[]),
        };
        let caller_windows = c.caller.map(|(_, l, _)| windows_of(l)).unwrap_or_default();
        let (caller_name, caller_tokens) = c.caller.map(|(n, _, t)| (n, t)).unwrap_or_default();
        let key_window = |fp: &str, kind: Kind| {
            format!("{}:lim:key:{}:{fp}:{}", self.prefix, c.name, kind.name())
        };

        let mut call = self.reserve.prepare_invoke();
        let in_flight_key = format!("{}:inflight:{}:{}", self.prefix, c.scope, c.name);
        let member = format!("{}:{}", self.replica, self.leases.fetch_add(1, Relaxed));
        call.key(self.state_key(c.scope, c.name));
        call.key(&in_flight_key);
        call.arg(c.tokens);
        match c.cap {
            Some((max, lease)) => call
                .arg(max)
                .arg(&member)
                .arg(lease.as_millis().max(1) as u64),
            None => call.arg(0).arg("").arg(0),
        };
        call.arg(windows.len())
            .arg(key_windows.len())
            .arg(candidates.len())
            .arg(caller_windows.len())
            .arg(c.probe.map_or(0, |p| p.as_millis().max(1) as u64))
            .arg(caller_tokens);
        for (kind, _, _) in &windows {
            call.key(self.window_key(c.scope, c.name, *kind));
        }
        for fp in candidates {
            for (kind, _, _) in &key_windows {
                call.key(key_window(fp, *kind));
            }
        }
        for (kind, _, _) in &caller_windows {
            call.key(self.window_key("c", caller_name, *kind));
        }
        for (kind, limit, width) in windows.iter().chain(&key_windows).chain(&caller_windows) {
            call.arg(*limit)
                .arg(*width)
                .arg(u8::from(*kind == Kind::Tpm));
        }

        let mut conn = (*conn).clone();
        let answer: Result<redis::RedisResult<Vec<redis::Value>>, _> =
            tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await;
        let values = match answer {
            Err(_) => {
                self.down(&format!("no answer within {} ms", self.timeout.as_millis()));
                // The script may still run: a lease it adds must not hold a
                // place for its whole length (its windows count, at most a
                // window: that errs on the safe side).
                if c.cap.is_some() {
                    drop(Lease {
                        shared: self.clone(),
                        key: in_flight_key,
                        member,
                    });
                }
                return Checked::unavailable();
            }
            Ok(Err(e)) => {
                self.down(&e.to_string());
                return Checked::unavailable();
            }
            Ok(Ok(v)) => v,
        };
        self.up();

        let number = |v: &redis::Value| match v {
            redis::Value::Int(n) => Some(*n),
            _ => None,
        };
        let head: Vec<i64> = values.iter().take(7).map_while(number).collect();
        let [code, x, y, _z, now_us, caller_taken, probe] = head[..] else {
            self.down(&format!("unexpected script answer {head:?}"));
            return Checked::unavailable();
        };
        let cooling: Vec<(String, Duration)> = values
            .get(7..)
            .unwrap_or_default()
            .chunks(2)
            .filter_map(|pair| match pair {
                [redis::Value::BulkString(field), left] => Some((
                    String::from_utf8_lossy(field).into_owned(),
                    Duration::from_millis(number(left)?.max(0) as u64),
                )),
                _ => None,
            })
            .collect();
        let now_us = now_us.max(0) as u64;
        let held = |kind: Kind, width: u64, key: String, tokens: u64| {
            let need = if kind == Kind::Tpm { tokens } else { 1 };
            (key, now_us / width, need, kind == Kind::Tpm)
        };
        let taken = |kind: Kind, width: u64, key: String| held(kind, width, key, c.tokens);
        let caller = (caller_taken == 1).then(|| Reservation {
            taken: caller_windows
                .iter()
                .map(|(kind, _, width)| {
                    let key = self.window_key("c", caller_name, *kind);
                    held(*kind, *width, key, caller_tokens)
                })
                .collect(),
        });
        let refused = |list: &[(Kind, u64, u64)], index: i64, wait_us: i64| {
            let (kind, limit, _) = list[(index.max(1) as usize - 1).min(list.len() - 1)];
            Refused {
                limit: kind,
                max: limit,
                retry_after: Duration::from_micros(wait_us.max(1) as u64),
            }
        };
        let verdict = match code {
            1 => {
                let mut held: Vec<_> = windows
                    .iter()
                    .map(|(kind, _, width)| {
                        taken(*kind, *width, self.window_key(c.scope, c.name, *kind))
                    })
                    .collect();
                let key_index = usize::try_from(y)
                    .ok()
                    .and_then(|k| k.checked_sub(1))
                    .filter(|&k| k < candidates.len());
                if let Some(k) = key_index {
                    held.extend(key_windows.iter().map(|(kind, _, width)| {
                        taken(*kind, *width, key_window(&candidates[k], *kind))
                    }));
                }
                Verdict::Admitted {
                    reservation: Reservation { taken: held },
                    headroom: (x as f32 / 1000.0).clamp(0.0, 1.0),
                    lease: c.cap.map(|_| Lease {
                        shared: self.clone(),
                        key: in_flight_key,
                        member,
                    }),
                    key_index,
                    probe: probe == 1,
                }
            }
            0 if !windows.is_empty() => Verdict::Refused(refused(&windows, x, y)),
            2 => Verdict::AtCapacity(x as u32),
            3 => Verdict::KeysBusy(Duration::from_micros(x.max(1) as u64)),
            4 if !caller_windows.is_empty() => {
                Verdict::CallerRefused(refused(&caller_windows, x, y))
            }
            _ => {
                self.down(&format!("unexpected script answer {head:?}"));
                return Checked::unavailable();
            }
        };
        Checked {
            caller,
            cooling,
            verdict,
        }
    }

    /// The request's real token count corrects its `tpm` bucket (sent off
    /// the request path).
    pub fn reconcile(self: &Arc<Self>, r: &Reservation, actual: u64) {
        let changes: Vec<(String, u64, i64)> = r
            .taken
            .iter()
            .filter(|(_, _, _, tokens)| *tokens)
            .map(|(key, slot, need, _)| (key.clone(), *slot, actual as i64 - *need as i64))
            .filter(|(_, _, delta)| *delta != 0)
            .collect();
        self.send_adjustments(changes);
    }

    /// Gives a reservation back whole (the request was never sent).
    pub fn release(self: &Arc<Self>, r: &Reservation) {
        let changes = r
            .taken
            .iter()
            .map(|(key, slot, need, _)| (key.clone(), *slot, -(*need as i64)))
            .collect();
        self.send_adjustments(changes);
    }

    fn send_adjustments(self: &Arc<Self>, changes: Vec<(String, u64, i64)>) {
        if changes.is_empty() {
            return;
        }
        self.off_path(false, move |me, mut conn| async move {
            for (key, slot, delta) in changes {
                let mut call = me.adjust.prepare_invoke();
                call.key(key).arg(slot).arg(delta);
                let sent: Result<redis::RedisResult<i64>, _> =
                    tokio::time::timeout(me.timeout * 4, call.invoke_async(&mut conn)).await;
                if !matches!(sent, Ok(Ok(_))) {
                    // A lost correction errs on the safe side for at most
                    // a window; the next check notices Redis is down.
                    break;
                }
            }
        });
    }
}

/// The windows of `limits`: kind, size, bucket width in µs.
fn windows_of(limits: Limits) -> Vec<(Kind, u64, u64)> {
    [
        (Kind::Rps, limits.rps, 1_000_000u64),
        (Kind::Rpm, limits.rpm, 60_000_000),
        (Kind::Tpm, limits.tpm, 60_000_000),
    ]
    .into_iter()
    .filter_map(|(kind, limit, window)| Some((kind, limit?, window.div_ceil(60))))
    .collect()
}
