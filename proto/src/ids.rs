//! Typed identifiers. Every ID that crosses a crate boundary has its own type,
//! so a shard name can never be passed where a worker id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string without validation (IDs read from storage or the wire).
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The ID as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The ID as an owned string, for protobuf messages.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }
    };
}

string_id!(
    /// A hunt, `h-<n>` where n is the raft index that created it.
    HuntId
);
string_id!(
    /// One task of a hunt: one shard scanned by the hunt's module.
    TaskId
);
string_id!(
    /// A shard: a named, labelled collection of events on a worker.
    ShardId
);
string_id!(
    /// A worker process.
    WorkerId
);
string_id!(
    /// The lowercase hex sha256 of a module's bytes.
    ModuleDigest
);

string_id!(
    /// A recurring hunt, named by its creator (`nightly-rare-process`).
    ScheduleId
);

string_id!(
    /// A client-chosen id of one logical write (submit, cancel, resume):
    /// retries of the write carry the same id, and the coordinator applies
    /// it at most once.
    RequestId
);

impl RequestId {
    /// Longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// Checks the id: 1 to [`Self::MAX_LEN`] ASCII letters, digits, `-` or `_`.
    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.0.is_empty()
            && self.0.len() <= Self::MAX_LEN
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "request id `{}` is invalid: use 1 to {} ASCII letters, digits, `-` or `_` (a UUID works)",
                self.0.escape_debug(),
                Self::MAX_LEN
            ))
        }
    }
}

impl TaskId {
    /// The task of `hunt` that scans `shard`.
    pub fn for_shard(hunt: &HuntId, shard: &ShardId) -> Self {
        Self(format!("{hunt}/{shard}"))
    }
}

impl ModuleDigest {
    /// Whether this is 64 lowercase hex characters.
    pub fn is_well_formed(&self) -> bool {
        self.0.len() == 64
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

/// A coordinator's raft node id (non-zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_names_hunt_and_shard() {
        let id = TaskId::for_shard(&HuntId::new("h-7"), &ShardId::new("win-dc01"));
        assert_eq!(id.as_str(), "h-7/win-dc01");
    }

    #[test]
    fn digest_shape_is_checked() {
        assert!(ModuleDigest::new("a".repeat(64)).is_well_formed());
        assert!(!ModuleDigest::new("A".repeat(64)).is_well_formed());
        assert!(!ModuleDigest::new("abc").is_well_formed());
    }
}
