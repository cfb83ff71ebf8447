//! Switchyard: an LLM gateway whose routing strategies, provider adapters and
//! response evaluators are sandboxed WebAssembly components.
//!
//! The host owns everything that touches the network, a secret or the clock;
//! plugins only compute. A request flows through [`pipeline`] top to bottom:
//! route → strategy order → per candidate adapter, upstream call, evaluator →
//! answer or failover.
//!
//! - [`server`]: the HTTP API (thin axum handlers).
//! - [`pipeline`]: the request pipeline.
//! - [`failover`]: what a failed attempt means; [`health`]: live deployment stats.
//! - [`upstream`]: the HTTP client, secrets and timeouts.
//! - [`plugins`]: the WebAssembly plugin runtime and hot reload.
//! - [`config`]: the config file and its schema; [`live`]: reloading it
//!   while serving; [`error`]: API errors.
//! - [`store`]: the embedded SQLite store (written by one thread).
//! - [`watch`]: debounced file watching (plugins and config).
//! - [`demo`]: the built-in echo upstream.

pub mod admin;
pub mod auth;
pub mod background;
pub mod budget;
pub mod busy_poll;
pub mod cache;
pub mod calendar;
pub mod capacity;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod failover;
pub mod feedback;
pub mod health;
pub mod keys;
pub mod live;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod monitor;
pub mod ops;
pub mod pipeline;
pub mod plugins;
pub mod ratelimit;
pub mod server;
pub mod shadow;
pub mod stats;
pub mod store;
pub mod structured;
pub mod telemetry;
pub mod upstream;
pub mod watch;
