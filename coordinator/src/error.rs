//! The coordinator's one error type.

use quarry_proto::status::{ErrorKind, ServiceError};

/// Everything that can go wrong in the coordinator, phrased for the caller.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A request was malformed or named something impossible.
    #[error("{0}")]
    InvalidArgument(String),
    /// A request named something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing being created exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// This node cannot take writes now.
    #[error(
        "coordinator {node} is not the raft leader (leader: {leader}); retry against the leader"
    )]
    NotLeader {
        /// This node.
        node: u64,
        /// The leader this node knows of, 0 if none.
        leader: u64,
    },
    /// Leadership moved after a write was proposed: it may still commit
    /// under the new leader, or may be lost.
    #[error(
        "coordinator {node} lost the raft leadership (leader now: {leader}) while the write was in flight; it may or may not have been applied: check (for example `quarry hunt list`) before retrying, or send a request id so that a retry is applied at most once"
    )]
    OutcomeUnknown {
        /// This node.
        node: u64,
        /// The leader this node knows of, 0 if none.
        leader: u64,
    },
    /// The raft node stopped (shutdown or a fatal storage error).
    #[error("the coordinator's raft node has stopped; restart the coordinator")]
    NodeStopped,
    /// A proposal was not committed in time.
    #[error("proposal was not committed within {0:?}; the cluster may have lost its quorum")]
    ProposalTimeout(std::time::Duration),
    /// RocksDB failed; the node must restart.
    #[error("storage error in {path}: {source}")]
    Storage {
        /// The data directory.
        path: String,
        /// The RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// Stored bytes did not decode; the data directory is damaged or from another version.
    #[error("corrupt record `{key}` in the coordinator store: {detail}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What failed.
        detail: String,
    },
    /// The raft library refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// TLS material or an identity cannot be used.
    #[error(transparent)]
    Security(#[from] quarry_security::SecurityError),
    /// Binding or serving a socket failed.
    #[error("cannot serve on {addr}: {detail}")]
    Serve {
        /// The address.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// Filesystem error outside RocksDB.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ServiceError for CoordinatorError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::NotLeader { .. } | Self::NodeStopped => ErrorKind::Unavailable,
            Self::OutcomeUnknown { .. } => ErrorKind::OutcomeUnknown,
            Self::ProposalTimeout(_) => ErrorKind::DeadlineExceeded,
            Self::Storage { .. }
            | Self::Corrupt { .. }
            | Self::Raft(_)
            | Self::Serve { .. }
            | Self::Security(_)
            | Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(err: CoordinatorError) -> Self {
        quarry_proto::status::to_status(&err)
    }
}

/// Shorthand for coordinator results.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
