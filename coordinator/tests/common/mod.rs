//! Helpers shared by the coordinator's integration tests.

use quarry_coordinator::node::NodeHandle;
use quarry_coordinator::state::{Command, ModuleRecord};
use quarry_proto::ModuleDigest;

/// Commits module `m@1` through raft. Its bytes are a placeholder (the
/// upload check is an API concern): these tests schedule and report tasks
/// themselves and never run the module.
pub async fn commit_module_m1(node: &NodeHandle) {
    node.propose(Command::UploadModule {
        module: ModuleRecord {
            digest: ModuleDigest::new("ab".repeat(32)),
            name: "m".into(),
            version: "1".into(),
            description: String::new(),
            uploaded_ms: 1,
            bytes: vec![1],
        },
    })
    .await
    .expect("commit")
    .expect("module");
}
