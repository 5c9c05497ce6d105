//! The worker's one error type.

use crate::shard::ShardError;
use quarry_proto::ModuleDigest;

/// What can go wrong in a worker, phrased for the operator or the hunter.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// TLS material or an identity cannot be used.
    #[error(transparent)]
    Security(#[from] quarry_security::SecurityError),
    /// The shard store failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The wasm engine could not be set up.
    #[error("wasm runtime: {0}")]
    Runtime(String),
    /// A module is not a usable hunt module.
    #[error("module {digest} is not a usable hunt module: {detail}")]
    InvalidModule {
        /// The module.
        digest: ModuleDigest,
        /// What is wrong.
        detail: String,
    },
    /// A module download was refused: too large, or its bytes do not have
    /// the digest asked for.
    #[error("module {digest} download refused: {detail}")]
    ModuleDownload {
        /// The module asked for.
        digest: ModuleDigest,
        /// What was wrong.
        detail: String,
    },
    /// A task failed; the message names the cause (deadline, memory, trap, guest error).
    #[error("{0}")]
    Task(String),
    /// The rule pack a task is bound to cannot be used: deleted from the
    /// store, or its content does not have the bound digest.
    #[error("rule pack {name} version {version}: {detail}")]
    RulePack {
        /// The pack.
        name: String,
        /// The version the hunt is bound to.
        version: u32,
        /// What is wrong.
        detail: String,
    },
    /// The task was cancelled.
    #[error("task cancelled")]
    Cancelled,
    /// The coordinator could not be reached or refused a call.
    #[error("coordinator {url}: {detail}")]
    Coordinator {
        /// Its URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// Binding or serving failed.
    #[error("cannot serve on {addr}: {detail}")]
    Serve {
        /// The address.
        addr: String,
        /// What failed.
        detail: String,
    },
}
