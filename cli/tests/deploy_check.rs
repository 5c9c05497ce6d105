//! The deployment files (deploy/kubernetes, deploy/systemd) pass the
//! validators their users run: `deploy/check.sh` runs kubernetes-validate
//! (PyPI) against pinned Kubernetes versions and `systemd-analyze verify`,
//! and checks every command line they start against this build's `quarry`.
//!
//! `scripts/dev test` installs the tools and names their directory in
//! `QUARRY_TOOLS_BIN`. Without them the test is skipped with a message,
//! except under `CI=true`, where that is a broken set-up and fails.

use std::path::Path;
use std::process::Command;

#[test]
fn deployment_files_pass_their_validators() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(tools) = std::env::var_os("QUARRY_TOOLS_BIN") {
        let mut dirs = vec![std::path::PathBuf::from(tools)];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).expect("a PATH");
    }
    let has = |tool: &str| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file());
    if !has("kubernetes-validate") || !has("systemd-analyze") {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "kubernetes-validate or systemd-analyze is missing; `scripts/dev test` installs them and CI must have them"
        );
        eprintln!(
            "SKIPPED: kubernetes-validate or systemd-analyze is not installed (`scripts/dev test` installs both)"
        );
        return;
    }
    let output = Command::new("bash")
        .arg(repo.join("deploy/check.sh"))
        .env("PATH", &path)
        .env("QUARRY", env!("CARGO_BIN_EXE_quarry"))
        .output()
        .expect("deploy/check.sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "deploy/check.sh failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
