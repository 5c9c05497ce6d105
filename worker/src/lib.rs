//! `quarry-worker`: a Quarry worker.
//!
//! Holds shards on local disk ([`shard`]), registers them with the
//! coordinator, receives tasks over a stream, runs each task's module in the
//! wasm sandbox ([`runtime`]) over its shard and reports the partial result
//! ([`agent`]).

pub mod agent;
pub mod audit;
pub mod baseline_fetch;
pub mod bench;
pub mod columnar;
pub mod demo;
pub mod error;
pub mod event;
pub mod ingest;
pub mod ingest_service;
pub mod intel_fetch;
pub mod memory;
mod metrics;
pub mod module_cache;
pub mod prefilter;
mod rng;
pub mod rule_pack_fetch;
pub mod runtime;
pub mod scenario;
pub mod shard;

pub use agent::{Worker, WorkerConfig};
pub use error::WorkerError;
