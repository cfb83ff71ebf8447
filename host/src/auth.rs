//! Client (virtual) keys: who may call the API, on which routes, how fast.
//!
//! A key is stored in the config only as its SHA-256 (`sha256:<hex>`); a
//! request presents it as `Authorization: Bearer <key>` (OpenAI clients) or
//! `x-api-key: <key>` (Anthropic clients). The key's name is the caller's
//! identity in records, budgets and strategy hints. With `auth.required`,
//! a request without a valid key gets a 401; a key on a route it may not
//! use gets a 403. Each key may carry its own `rpm`, `rps` and `tpm`
//! (sliding windows, as deployments' limits; tokens reserved from the
//! request's estimate and reconciled with its usage).
//!
//! Keys are looked up by hash (a hash map of 32-byte digests), so the
//! comparison's timing says nothing about a valid key's value.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::ClientAuthConfig;
use crate::error::ApiError;
use crate::ratelimit::Limiter;

/// One client key as the gateway knows it (its secret is not kept).
#[derive(Debug)]
pub struct ClientKey {
    pub name: Arc<str>,
    routes: Vec<String>,
    pub tags: Vec<String>,
    /// Its own limits; kept across reloads by name. (With Redis, this
    /// replica's share, used while Redis is unavailable.)
    pub limiter: Arc<Limiter>,
    /// Its configured limits, whole.
    pub limits: crate::ratelimit::Limits,
}

impl ClientKey {
    /// Whether it may use route `route` (a name, or a wildcard route's
    /// `prefix*` as configured).
    pub fn may_use(&self, route: &str) -> bool {
        self.routes.is_empty()
            || self.routes.iter().any(|r| match r.strip_suffix('*') {
                Some(prefix) => route.starts_with(prefix),
                None => r == route,
            })
    }
}

/// Every client key, by hash.
#[derive(Debug, Default)]
pub struct ClientKeys {
    pub required: bool,
    by_hash: HashMap<[u8; 32], Arc<ClientKey>>,
}

/// `sha256:<64 hex digits>` to its 32 bytes.
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hex = text.strip_prefix("sha256:").ok_or_else(|| {
        format!("{text:?} does not start with sha256: (switchyard keys new prints the hash to use)")
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a key's hash is sha256: and 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `sha256:<hex>` of a key.
pub fn hash_text(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A new random key (`sy-` and 43 base64url characters: 256 bits).
pub fn new_key() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::from("sy-");
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    Ok(out)
}

impl ClientKeys {
    /// From the config (hashes were checked when it resolved), keeping
    /// `previous`'s limiters by key name.
    pub fn build(
        config: &ClientAuthConfig,
        warn_at: f64,
        replicas: u32,
        previous: Option<&ClientKeys>,
    ) -> Self {
        let old: HashMap<&str, &Arc<ClientKey>> = previous
            .map(|p| p.by_hash.values().map(|k| (&*k.name, k)).collect())
            .unwrap_or_default();
        let by_hash = config
            .keys
            .iter()
            .filter_map(|(name, k)| {
                let hash = parse_hash(&k.hash).ok()?;
                let local = k.limits().share(replicas);
                let limiter = match old.get(name.as_str()) {
                    Some(o) => {
                        o.limiter.set(local, warn_at);
                        o.limiter.clone()
                    }
                    None => Arc::new(Limiter::new(local, warn_at)),
                };
                Some((
                    hash,
                    Arc::new(ClientKey {
                        name: Arc::from(name.as_str()),
                        routes: k.routes.clone(),
                        tags: k.tags.clone(),
                        limiter,
                        limits: k.limits(),
                    }),
                ))
            })
            .collect();
        Self {
            required: config.required,
            by_hash,
        }
    }

    /// The caller a request's headers name. Without a key: anonymous, or a
    /// 401 when keys are required. A key that is not known is a 401 when
    /// keys are required, and anonymous otherwise (clients send placeholder
    /// keys to gateways that need none).
    pub fn identify(&self, headers: &HeaderMap) -> Result<Option<Arc<ClientKey>>, ApiError> {
        // No keys and none required: nobody to tell apart (no header read).
        if self.by_hash.is_empty() && !self.required {
            return Ok(None);
        }
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .unwrap_or(v)
                    .trim()
            })
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .filter(|k| !k.is_empty());
        let Some(presented) = presented else {
            return if self.required {
                Err(ApiError::Unauthorized(
                    "this gateway needs a client key: send Authorization: Bearer <key> (or x-api-key)".into(),
                ))
            } else {
                Ok(None)
            };
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match self.by_hash.get(&digest) {
            Some(key) => Ok(Some(key.clone())),
            None if self.required => Err(ApiError::Unauthorized(
                "the client key presented is not valid here".into(),
            )),
            None => Ok(None),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientKeyConfig;

    fn config(required: bool, key: &str, routes: &[&str]) -> ClientAuthConfig {
        let mut c = ClientAuthConfig {
            required,
            ..Default::default()
        };
        c.keys.insert(
            "team-a".into(),
            ClientKeyConfig {
                hash: hash_text(key),
                routes: routes.iter().map(|s| s.to_string()).collect(),
                rpm: Some(10),
                rps: None,
                tpm: None,
                tags: vec!["a".into()],
            },
        );
        c
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn keys_are_known_by_their_hash_from_either_header() {
        let key = new_key().unwrap();
        assert!(key.starts_with("sy-") && key.len() == 3 + 43, "{key}");
        assert_ne!(key, new_key().unwrap());
        let keys = ClientKeys::build(&config(true, &key, &["demo", "gpt-*"]), 0.9, 1, None);
        let bearer = format!("Bearer {key}");
        let who = keys
            .identify(&headers(&[("authorization", &bearer)]))
            .unwrap()
            .unwrap();
        assert_eq!(&*who.name, "team-a");
        assert!(who.may_use("demo") && who.may_use("gpt-4o") && !who.may_use("other"));
        assert!(
            keys.identify(&headers(&[("x-api-key", &key)]))
                .unwrap()
                .is_some()
        );
        for bad in [vec![], vec![("authorization", "Bearer sy-wrong")]] {
            assert!(matches!(
                keys.identify(&headers(&bad)),
                Err(ApiError::Unauthorized(_))
            ));
        }
    }

    #[test]
    fn without_required_keys_unknown_callers_are_anonymous() {
        let keys = ClientKeys::build(&config(false, "sy-k", &[]), 0.9, 1, None);
        assert!(
            keys.identify(&headers(&[("authorization", "Bearer sk-placeholder")]))
                .unwrap()
                .is_none()
        );
        assert!(keys.identify(&HeaderMap::new()).unwrap().is_none());
        let who = keys
            .identify(&headers(&[("authorization", "Bearer sy-k")]))
            .unwrap()
            .unwrap();
        assert!(who.may_use("anything"), "no routes listed: every route");
    }

    #[test]
    fn hashes_are_checked_and_limiters_kept_across_reloads() {
        assert!(parse_hash("sha256:00").is_err());
        assert!(parse_hash(&"a".repeat(71)).is_err());
        assert_eq!(parse_hash(&hash_text("x")).unwrap().len(), 32);
        let c = config(false, "sy-k", &[]);
        let old = ClientKeys::build(&c, 0.9, 1, None);
        let new = ClientKeys::build(&c, 0.9, 1, Some(&old));
        let a = old.by_hash.values().next().unwrap();
        let b = new.by_hash.values().next().unwrap();
        assert!(Arc::ptr_eq(&a.limiter, &b.limiter));
    }
}
