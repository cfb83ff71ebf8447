//! The host interface: the only way out of the sandbox.
//!
//! A plugin has no clock, files, network or environment of its own; these
//! functions ask the gateway. They may only be called while the host is
//! calling into the plugin (they are import stubs when built natively for unit
//! tests, so keep host calls out of the logic you test that way).

use alloc::string::String;

use crate::bindings::base::switchyard::plugin::host;
use crate::types::LogLevel;

/// Writes `message` to the gateway's log at `level`; the host tags the line
/// with the plugin id and the id of the request being served.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Shorthands for [`log()`](fn@crate::log) at each level.
pub mod log {
    use super::{LogLevel, host};

    /// Logs at trace level: very chatty detail, off in production.
    pub fn trace(message: &str) {
        host::log(LogLevel::Trace, message);
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        host::log(LogLevel::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        host::log(LogLevel::Info, message);
    }
    /// Logs at warn level: something odd that the plugin worked around.
    pub fn warn(message: &str) {
        host::log(LogLevel::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        host::log(LogLevel::Error, message);
    }
}

/// Monotonic nanoseconds since an arbitrary origin (the host's start): the
/// only clock a plugin has, good for measuring, not for dates.
pub fn now_ns() -> u64 {
    host::monotonic_now()
}

/// This plugin's own block of the gateway config as JSON text (`{}` when the
/// config has none). Parse it per call or cache it: the host may hot-reload
/// the config, and a cached copy then goes stale until the instance is replaced.
pub fn plugin_config() -> String {
    host::plugin_config()
}

/// Atomically increments the counter `name` and returns its previous value.
///
/// Counters live in the host (one namespace per plugin id), so they are shared
/// by every instance of the plugin and survive instance replacement and hot
/// reload; a static inside the plugin would not be.
///
/// The host bounds them (at most 64 counters per plugin, names of at most 64
/// bytes) and answers `Err` naming the limit beyond that; the error is not
/// transient, so have a fallback that still gives a usable answer (e.g.
/// derive a turn from [`now_ns`]) rather than failing the call.
pub fn counter_next(name: &str) -> Result<u64, String> {
    host::counter_next(name)
}

/// 64 random bits from the host (this plugin's own stream, seeded by the
/// host: from the OS, or from `SWITCHYARD_PLUGIN_SEED` in tests, so a
/// seeded run makes the same choices). Not for secrets.
pub fn random_u64() -> u64 {
    host::random_u64()
}
