//! Upstream key pools: the API keys a deployment sends with, each with its
//! own limits, cool-down and standing.
//!
//! A deployment names one key variable or several (`api_key_env`). Requests
//! rotate among the keys that have headroom (round robin from a moving
//! start, skipping keys that cool down, are at one of their limits, or were
//! refused). A 429 cools down the key that got it, not the deployment while
//! it has other keys; a 401 or 403 takes the key out until the config
//! reloads (a rotated variable is a reload). What a provider reports of
//! its quota in the answer's headers tightens that key's limiter.
//!
//! A key's value never leaves this module except into the request's auth
//! header: logs, errors and the admin API show the variable's name and a
//! short hash ([`UpstreamKey::fingerprint`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::ratelimit::{Event, Kind, Limiter, Limits, Refused, Reservation};

/// One key of a deployment's pool. (`Debug` shows its label, never the key.)
pub struct UpstreamKey {
    /// The variable it is read from (`None`: the deployment sends no key).
    pub env: Option<String>,
    value: Option<String>,
    /// The first 8 hex digits of the value's SHA-256: tells keys apart in
    /// logs and the admin API without revealing them.
    pub fingerprint: String,
    /// Its own limits (`key_limits`) and the provider's reported quota.
    pub limiter: Arc<Limiter>,
    origin: Instant,
    /// Milliseconds since `origin` until which it cools down after a 429.
    cooling_until_ms: AtomicU64,
    /// Refused by the upstream (401/403): out until the config reloads.
    revoked: AtomicBool,
}

impl UpstreamKey {
    fn new(env: Option<String>, value: Option<String>, limits: Limits, warn_at: f64) -> Self {
        Self {
            fingerprint: value.as_deref().map(fingerprint).unwrap_or_default(),
            env,
            value,
            limiter: Arc::new(Limiter::new(limits, warn_at)),
            origin: Instant::now(),
            cooling_until_ms: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
        }
    }

    /// The secret, for the auth header only.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// How logs and errors name it: `OPENAI_KEY_2 (3f9a01c2)`.
    pub fn label(&self) -> String {
        match &self.env {
            None => "(no key)".into(),
            Some(env) if self.value.is_none() => format!("{env} (unset)"),
            Some(env) => format!("{env} ({})", self.fingerprint),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// How long it still cools down.
    pub fn cooling_for(&self) -> Option<Duration> {
        let until = self.cooling_until_ms.load(Relaxed);
        let now = self.now_ms();
        (now < until).then(|| Duration::from_millis(until - now))
    }

    /// A 429 on this key: out for `for_`.
    pub fn cool_down(&self, for_: Duration) {
        let until = self.now_ms() + for_.as_millis() as u64;
        self.cooling_until_ms.fetch_max(until, Relaxed);
    }

    /// A 401/403: out until the config reloads. True the first time (log it once).
    pub fn revoke(&self) -> bool {
        !self.revoked.swap(true, Relaxed)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Relaxed)
    }

    /// `active`, `cooling_down`, `revoked` or `unset`.
    pub fn state(&self) -> &'static str {
        if self.env.is_some() && self.value.is_none() {
            "unset"
        } else if self.is_revoked() {
            "revoked"
        } else if self.cooling_for().is_some() {
            "cooling_down"
        } else {
            "active"
        }
    }
}

impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamKey")
            .field("key", &self.label())
            .field("state", &self.state())
            .finish()
    }
}

/// The first 8 hex digits of a key's SHA-256.
pub fn fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A deployment's keys.
#[derive(Debug)]
pub struct KeyPool {
    keys: Vec<Arc<UpstreamKey>>,
    next: AtomicUsize,
}

/// A key chosen for one attempt, with what it holds of the key's limits.
pub struct Lease {
    pub key: Arc<UpstreamKey>,
    pub reservation: Option<Reservation>,
}

/// Why no key of the pool can take a request now.
#[derive(Debug, PartialEq)]
pub enum NoKey {
    /// Every key's variable is unset: the deployment cannot authenticate.
    Unset(Vec<String>),
    /// Every key was refused by the upstream (401/403).
    Revoked,
    /// Every usable key cools down or is at a limit: free again after
    /// `retry_after`. `limit` names the limit when one was the reason.
    Busy {
        retry_after: Duration,
        limit: Option<(Kind, u64)>,
    },
}

impl KeyPool {
    /// The pool for `envs` (no variable: one pseudo-key that sends nothing),
    /// keeping from `previous` the limiter and cool-down of each key whose
    /// variable still holds the same value. Standing (revoked) starts afresh:
    /// a reload is when a refused key gets another chance.
    pub fn new(
        envs: &[String],
        read: impl Fn(&str) -> Option<String>,
        limits: Limits,
        warn_at: f64,
        previous: Option<&KeyPool>,
    ) -> Self {
        let entries: Vec<(Option<String>, Option<String>)> = if envs.is_empty() {
            vec![(None, None)]
        } else {
            envs.iter().map(|e| (Some(e.clone()), read(e))).collect()
        };
        let keys = entries
            .into_iter()
            .map(|(env, value)| {
                let kept = previous.and_then(|p| {
                    p.keys
                        .iter()
                        .find(|k| k.env == env && k.value == value)
                        .cloned()
                });
                Arc::new(match kept {
                    Some(old) => {
                        old.limiter.set(limits, warn_at);
                        UpstreamKey {
                            env: old.env.clone(),
                            value: old.value.clone(),
                            fingerprint: old.fingerprint.clone(),
                            limiter: old.limiter.clone(),
                            origin: old.origin,
                            cooling_until_ms: AtomicU64::new(old.cooling_until_ms.load(Relaxed)),
                            revoked: AtomicBool::new(false),
                        }
                    }
                    None => UpstreamKey::new(env, value, limits, warn_at),
                })
            })
            .collect();
        Self {
            keys,
            next: AtomicUsize::new(previous.map_or(0, |p| p.next.load(Relaxed))),
        }
    }

    pub fn keys(&self) -> &[Arc<UpstreamKey>] {
        &self.keys
    }

    /// Where this request's turn of the rotation starts (no atomic for a
    /// single key).
    fn turn(&self) -> usize {
        match self.keys.len() {
            0 | 1 => 0,
            n => self.next.fetch_add(1, Relaxed) % n,
        }
    }

    /// The keys that could be used now (set, not refused, not cooling),
    /// by index, in this request's turn of the rotation.
    pub fn rotation(&self) -> Vec<usize> {
        let n = self.keys.len();
        let start = self.turn();
        (0..n)
            .map(|i| (start + i) % n)
            .filter(|&i| {
                let k = &self.keys[i];
                k.env.is_some() && k.value.is_some() && !k.is_revoked() && k.cooling_for().is_none()
            })
            .collect()
    }

    /// Whether some key other than `key` could still be used (so a 429 on
    /// `key` need not cool the whole deployment down).
    pub fn has_other_usable(&self, key: &UpstreamKey) -> bool {
        self.keys.iter().any(|k| {
            !std::ptr::eq(&**k, key)
                && k.value.is_some()
                && !k.is_revoked()
                && k.cooling_for().is_none()
        })
    }

    /// The next key with headroom, its limits reserved (`tokens` against
    /// `tpm`); the limiter's events go to `events`.
    pub fn pick(&self, tokens: u64, events: &mut Vec<(Event, String)>) -> Result<Lease, NoKey> {
        let n = self.keys.len();
        let start = self.turn();
        let mut unset = Vec::new();
        let mut revoked = 0;
        let mut soonest: Option<(Duration, Option<(Kind, u64)>)> = None;
        let mut wait = |d: Duration, limit: Option<(Kind, u64)>| {
            if soonest.is_none_or(|(s, _)| d < s) {
                soonest = Some((d, limit));
            }
        };
        for i in 0..n {
            let key = &self.keys[(start + i) % n];
            if let (Some(env), None) = (&key.env, &key.value) {
                unset.push(env.clone());
                continue;
            }
            if key.is_revoked() {
                revoked += 1;
                continue;
            }
            if let Some(left) = key.cooling_for() {
                wait(left, None);
                continue;
            }
            if !key.limiter.is_active() {
                return Ok(Lease {
                    key: key.clone(),
                    reservation: None,
                });
            }
            let mut raised = Vec::new();
            let result = key.limiter.try_reserve(tokens, &mut raised);
            events.extend(raised.into_iter().map(|e| (e, key.label())));
            match result {
                Ok(r) => {
                    return Ok(Lease {
                        key: key.clone(),
                        reservation: Some(r),
                    });
                }
                Err(Refused {
                    limit,
                    max,
                    retry_after,
                }) => wait(retry_after, Some((limit, max))),
            }
        }
        match soonest {
            Some((retry_after, limit)) => Err(NoKey::Busy { retry_after, limit }),
            None if revoked > 0 => Err(NoKey::Revoked),
            None => Err(NoKey::Unset(unset)),
        }
    }

    /// Each key as the admin API shows it: variable, short hash, state,
    /// limits. Never the value.
    pub fn views(&self) -> Vec<serde_json::Value> {
        self.keys
            .iter()
            .filter(|k| k.env.is_some())
            .map(|k| {
                serde_json::json!({
                    "env": k.env,
                    "fingerprint": (!k.fingerprint.is_empty()).then_some(&k.fingerprint),
                    "state": k.state(),
                    "cooling_ms": k.cooling_for().map(|d| d.as_millis() as u64),
                    "headroom": k.limiter.headroom(),
                    "limits": k.limiter.usage().into_iter()
                        .map(|(kind, max, used)| (kind.name().to_string(), serde_json::json!({"max": max, "used": used})))
                        .collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect()
    }

    /// The tightest headroom of its usable keys' best (1 when a key is free).
    pub fn headroom(&self) -> f32 {
        self.keys
            .iter()
            .filter(|k| !k.is_revoked() && k.cooling_for().is_none())
            .map(|k| k.limiter.headroom())
            .fold(0.0, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(envs: &[&str], limits: Limits) -> KeyPool {
        let envs: Vec<String> = envs.iter().map(|s| s.to_string()).collect();
        KeyPool::new(
            &envs,
            |v| (v != "UNSET").then(|| format!("secret-{v}")),
            limits,
            0.9,
            None,
        )
    }

    fn env_of(l: &Lease) -> &str {
        l.key.env.as_deref().unwrap()
    }

    #[test]
    fn requests_rotate_among_keys_and_skip_cooling_and_revoked_ones() {
        let p = pool(&["A", "B", "C"], Limits::default());
        let mut ev = Vec::new();
        let seen: Vec<String> = (0..3)
            .map(|_| env_of(&p.pick(0, &mut ev).unwrap()).to_string())
            .collect();
        assert_eq!(seen, ["A", "B", "C"]);
        p.keys[1].cool_down(Duration::from_secs(5));
        assert!(p.keys[2].revoke());
        assert!(!p.keys[2].revoke(), "logged once");
        for _ in 0..4 {
            assert_eq!(env_of(&p.pick(0, &mut ev).unwrap()), "A");
        }
        assert!(!p.has_other_usable(&p.keys[0]));
        p.keys[0].cool_down(Duration::from_secs(2));
        match p.pick(0, &mut ev) {
            Err(NoKey::Busy { retry_after, limit }) => {
                assert!(
                    retry_after <= Duration::from_secs(2)
                        && retry_after > Duration::from_millis(1900)
                );
                assert_eq!(limit, None);
            }
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn each_key_keeps_its_own_limits() {
        let p = pool(
            &["A", "B"],
            Limits {
                rpm: Some(2),
                ..Limits::default()
            },
        );
        let mut ev = Vec::new();
        for _ in 0..4 {
            p.pick(0, &mut ev).unwrap();
        }
        match p.pick(0, &mut ev) {
            Err(NoKey::Busy { limit, .. }) => assert_eq!(limit, Some((Kind::Rpm, 2))),
            other => panic!("{:?}", other.err()),
        }
        assert_eq!(p.headroom(), 0.0);
        assert!(
            ev.iter()
                .any(|(e, who)| e.kind == "rate_limit_reached" && who.starts_with("A ("))
        );
    }

    #[test]
    fn unset_and_refused_pools_say_why() {
        let p = pool(&["UNSET"], Limits::default());
        assert_eq!(
            p.pick(0, &mut Vec::new()).err(),
            Some(NoKey::Unset(vec!["UNSET".into()]))
        );
        let p = pool(&["A", "UNSET"], Limits::default());
        p.keys[0].revoke();
        assert_eq!(p.pick(0, &mut Vec::new()).err(), Some(NoKey::Revoked));
        let none = pool(&[], Limits::default());
        assert!(none.pick(0, &mut Vec::new()).unwrap().key.value().is_none());
    }

    #[test]
    fn a_reload_keeps_cool_downs_of_unchanged_keys_and_forgives_refusals() {
        let old = pool(&["A", "B"], Limits::default());
        old.keys[0].cool_down(Duration::from_secs(30));
        old.keys[1].revoke();
        let envs = vec!["A".to_string(), "B".to_string()];
        let new = KeyPool::new(
            &envs,
            |v| Some(format!("secret-{v}")),
            Limits::default(),
            0.9,
            Some(&old),
        );
        assert!(new.keys[0].cooling_for().is_some());
        assert!(!new.keys[1].is_revoked());
        // A rotated value is a new key.
        let rotated = KeyPool::new(
            &envs,
            |v| Some(format!("new-{v}")),
            Limits::default(),
            0.9,
            Some(&old),
        );
        assert!(rotated.keys[0].cooling_for().is_none());
    }

    #[test]
    fn views_and_labels_never_show_the_secret() {
        let p = pool(&["A", "UNSET"], Limits::default());
        let text =
            serde_json::to_string(&p.views()).unwrap() + &p.keys[0].label() + &format!("{p:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains(&fingerprint("secret-A")));
        assert_eq!(p.keys[1].state(), "unset");
    }
}
