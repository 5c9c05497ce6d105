//! Library side of the `quarry` binary: the in-process local cluster used by
//! `quarry dev`, `quarry demo` and the cluster tests, the demo itself, and
//! output formatting.

pub mod audit_cmd;
pub mod bench;
pub mod bench_precision;
pub mod bench_scheduler;
pub mod bench_sigma;
pub mod bench_state;
pub mod certs_cmd;
pub mod client_args;
pub mod cluster;
pub mod config;
pub mod coverage;
pub mod demo;
pub mod hunt_transfer;
pub mod ingest;
pub mod intel;
pub mod intel_cmd;
pub mod migrate_cmd;
pub mod module_tool;
pub mod output;
pub mod pivot_cmd;
pub mod process_group;
pub mod query_cmd;
pub mod schedule_cmd;
pub mod share;
pub mod sigma_cmd;
pub mod signing_cmd;
pub mod token_cmd;
pub mod triage_cmd;
