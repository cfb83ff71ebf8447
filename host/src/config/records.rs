//! Records: the performance monitor and the store.

use super::*;

/// The performance monitor's windows and alerts (see [`crate::monitor`]).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The recent window, in seconds.
    #[serde(default = "d_window")]
    pub window_s: f64,
    /// The baseline the recent window is compared with (it includes the
    /// recent window's span; the comparison leaves it out).
    #[serde(default = "d_baseline")]
    pub baseline_s: f64,
    /// Recent p95 latency at least this many times the baseline's is degraded.
    #[serde(default = "d_degradation_ratio")]
    pub degradation_ratio: f64,
    /// ... for this long without a break before the alert.
    #[serde(default = "d_degradation_for")]
    pub degradation_for_s: f64,
    /// Fewer samples in a window decide nothing.
    #[serde(default = "d_min_samples")]
    pub min_samples: u32,
    /// The share of a deployment's recent attempts that failed over to
    /// another deployment that raises an alert.
    #[serde(default = "d_failover_rate")]
    pub failover_rate: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            window_s: d_window(),
            baseline_s: d_baseline(),
            degradation_ratio: d_degradation_ratio(),
            degradation_for_s: d_degradation_for(),
            min_samples: d_min_samples(),
            failover_rate: d_failover_rate(),
        }
    }
}

fn d_window() -> f64 {
    300.0
}
fn d_baseline() -> f64 {
    3600.0
}
fn d_degradation_ratio() -> f64 {
    2.0
}
fn d_degradation_for() -> f64 {
    120.0
}
fn d_min_samples() -> u32 {
    20
}
fn d_failover_rate() -> f64 {
    0.25
}

/// The record of every request (see [`crate::store`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The SQLite file; relative to the config's folder.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Rows older than this many days are deleted (0: kept forever).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: default_store_path(),
            retention_days: default_retention_days(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_store_path() -> PathBuf {
    PathBuf::from(".switchyard/switchyard.db")
}
fn default_retention_days() -> u32 {
    30
}
