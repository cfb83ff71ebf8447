//! End-to-end tests: the real `switchyard` binary, the real compiled plugins,
//! and a mock upstream on 127.0.0.1. One file per behaviour, one test binary.

mod dialects;
mod harness;
mod mock;
mod solo;
#[path = "../conformance/subset.rs"]
mod subset;

mod api;
mod boundary;
mod cache;
mod clients;
mod config;
mod conformance;
mod connections;
mod evaluators;
mod failover;
mod faults;
mod feedback;
mod hot_reload;
mod keys;
mod languages;
mod limits;
mod live_config;
mod metrics;
mod proxy;
mod queue;
mod records;
mod resume;
mod runtime;
mod sandbox;
mod shadow;
mod shared_limits;
mod soak;
mod store_faults;
mod strategies;
mod streaming;
mod structured;
mod traces;
mod ui;
