//! `quarry-proto`: the `quarry.v1` gRPC contract.
//!
//! Owns every `.proto`, the generated tonic/prost code ([`v1`]), the typed IDs
//! used across crates ([`ids`]) and the one place where service errors become
//! gRPC status codes ([`status`]).

pub mod aggregate;
pub mod ids;
pub mod rule_pack;
pub mod status;

/// Generated code for the `quarry.v1` package.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("quarry.v1");

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quarry_descriptor");
}

pub use ids::{HuntId, ModuleDigest, NodeId, RequestId, ScheduleId, ShardId, TaskId, WorkerId};

/// gRPC metadata key on an `UNAVAILABLE` answer from a follower: the URL of
/// the raft leader, which clients retry against.
pub const LEADER_METADATA_KEY: &str = "quarry-leader";

/// Largest chunk a module upload or fetch carries.
pub const MODULE_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest gRPC message any Quarry server or client accepts (task reports can
/// carry many findings).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
