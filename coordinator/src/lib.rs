//! `quarry-coordinator`: the Quarry control plane.
//!
//! A raft group (raft-rs) whose log, hard state and state machine live in
//! RocksDB. The state machine ([`state`]) holds modules, workers, shards,
//! hunts, tasks and committed findings; the leader's scheduler
//! ([`scheduler`]) places one task per shard on a live worker that holds it;
//! [`service`] serves the public `quarry.v1` API and the worker protocol.

pub mod audit;
pub mod audit_service;
pub mod clock;
pub mod compact;
pub mod convert;
pub mod error;
pub mod intel_service;
pub mod intel_store;
pub mod lease;
#[cfg(test)]
mod local_net;
pub mod membership;
mod metrics;
pub mod module_check;
pub mod module_trust;
pub mod node;
pub mod query_result;
pub mod raft_log;
pub mod raft_service;
pub mod rule_pack_service;
pub mod rule_packs;
pub mod schedule_service;
pub mod scheduler;
pub mod schedules;
pub mod server;
pub mod service;
pub mod snapshot_file;
pub mod state;
pub mod storage;
pub mod token_service;
pub mod transport;
pub mod triage_service;
pub mod triage_state;

pub use error::CoordinatorError;
pub use server::{Coordinator, CoordinatorConfig};
