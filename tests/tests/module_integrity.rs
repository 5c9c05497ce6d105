//! Module names belong to their first uploader, and a cluster can require
//! modules signed by keys it trusts: a real TLS coordinator and worker on
//! loopback, hunters and an admin with certificates from
//! `quarry_security::certs`, keys from `quarry_security::module_sign`, and
//! the test modules built from hunt-modules/. A worker refuses to run an
//! unsigned module once signatures are required, even one uploaded before.

use quarry_client::{Client, HuntRequest};
use quarry_hunt_modules::test_modules::NOOP;
use quarry_proto::v1;
use quarry_security::{Principal, Role, TlsFiles, certs, module_sign};
use std::path::Path;
use std::time::Duration;

fn files(pki: &Path, role: Role, name: &str) -> TlsFiles {
    let principal = Principal::new(role, name).expect("principal");
    let issued = match certs::issue(pki, &principal, &["127.0.0.1".into()], 2, pki) {
        Ok(issued) => issued,
        // Issued earlier in this test: the same files.
        Err(_) => certs::issued_paths(pki, &principal),
    };
    TlsFiles {
        ca: pki.join(certs::CA_CERT),
        cert: issued.cert,
        key: issued.key,
    }
}

async fn client(url: &str, pki: &Path, role: Role, name: &str) -> Client {
    Client::connect_with(url, Some(&files(pki, role, name)))
        .await
        .expect("connect")
}

/// Runs `module` over the one shard; returns the finished hunt.
async fn hunt(hunter: &mut Client, module: &str) -> v1::Hunt {
    let submitted = hunter
        .submit_hunt(HuntRequest::new(module).shard("logs").retries(1, 0))
        .await
        .expect("submit");
    tokio::time::timeout(
        Duration::from_secs(60),
        hunter.wait(&submitted.hunt_id, |_| {}),
    )
    .await
    .expect("the hunt ends")
    .expect("wait");
    hunter.hunt(&submitted.hunt_id).await.expect("hunt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_have_owners_and_signed_modules_are_enforced_up_to_the_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    certs::init_ca(&pki, "Test CA", 2).expect("CA");
    let cluster = quarry_tests::one_worker(
        dir.path(),
        "logs",
        "{\"@timestamp\":\"2024-03-01T10:00:00Z\",\"EventID\":4624}\n",
        Some((
            files(&pki, Role::Coordinator, "1"),
            files(&pki, Role::Worker, "w1"),
        )),
    )
    .await;
    let url = cluster.url.clone();

    let mut alice = client(&url, &pki, Role::Hunter, "alice").await;
    let mut mallory = client(&url, &pki, Role::Hunter, "mallory").await;
    let mut admin = client(&url, &pki, Role::Admin, "ops").await;

    // The first upload of a name makes its uploader the owner.
    let first = alice
        .upload_module("noop", "1.0.0", "", NOOP.wasm)
        .await
        .expect("alice uploads noop");
    assert_eq!(first.owner, "hunter:alice");
    let stolen = mallory
        .upload_module("noop", "9.9.9", "", NOOP.wasm)
        .await
        .expect_err("mallory may not publish noop");
    assert_eq!(
        stolen.code(),
        Some(tonic::Code::PermissionDenied),
        "{stolen}"
    );
    assert!(
        stolen.to_string().contains("belongs to hunter:alice"),
        "{stolen}"
    );
    let deleted = mallory
        .delete_module("noop@1.0.0")
        .await
        .expect_err("mallory may not delete noop");
    assert_eq!(
        deleted.code(),
        Some(tonic::Code::PermissionDenied),
        "{deleted}"
    );
    // A version, once uploaded, is immutable, for its owner too.
    let changed = alice
        .upload_module(
            "noop",
            "1.0.0",
            "",
            test_bytes_variant(NOOP.wasm).as_slice(),
        )
        .await
        .expect_err("same version, other bytes");
    assert!(changed.to_string().contains("already exists"), "{changed}");
    let modules = alice.list_modules().await.expect("list");
    assert!(
        modules
            .iter()
            .all(|m| m.name != "noop" || m.version == "1.0.0"),
        "{modules:?}"
    );

    // Signing keys: an admin trusts one; a module signed with it shows
    // its signer, one signed with another key is refused.
    let keys = dir.path().join("keys");
    let (key, public) = module_sign::keygen(&keys, "release").expect("keygen");
    let (rogue, _) = module_sign::keygen(&keys, "rogue").expect("keygen");
    let public = std::fs::read_to_string(public).expect("pub");
    let refused = alice
        .trust_key("mine", public.trim())
        .await
        .expect_err("only admins trust keys");
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied));
    admin
        .trust_key("release", public.trim())
        .await
        .expect("trust");
    let digest = quarry_worker::runtime::module_digest(NOOP.wasm);
    let sign = |key: &Path| {
        module_sign::parse_signature(&module_sign::sign(key, digest.as_str()).expect("sign"))
            .expect("hex")
    };
    let forged = alice
        .upload_signed_module(
            "noop-signed",
            "1.0.0",
            "",
            NOOP.wasm,
            Some(&sign(&rogue)),
            &[],
        )
        .await
        .expect_err("a key the cluster does not trust");
    assert!(forged.to_string().contains("does not verify"), "{forged}");
    // The same bytes as noop@1.0.0 keep that name; signing them records
    // the signer for that digest.
    let signed = alice
        .upload_signed_module("noop", "1.0.0", "", NOOP.wasm, Some(&sign(&key)), &[])
        .await
        .expect("signed upload");
    assert_eq!(signed.signed_by, "release");

    // Require signatures. An unsigned module uploaded earlier (by the admin,
    // under a name of its own) no longer runs: the worker refuses it.
    let unsigned_bytes = test_bytes_variant(NOOP.wasm);
    admin
        .upload_module("noop-unsigned", "1.0.0", "", &unsigned_bytes)
        .await
        .expect("unsigned upload while allowed");
    let ran = hunt(&mut alice, "noop-unsigned@1.0.0").await;
    assert_eq!(ran.state, v1::HuntState::Completed as i32, "{ran:?}");
    admin.set_module_policy(true).await.expect("policy");
    let refused = alice
        .upload_module(
            "noop-new",
            "1.0.0",
            "",
            &test_bytes_variant(&unsigned_bytes),
        )
        .await
        .expect_err("unsigned uploads are refused");
    assert!(
        refused.to_string().contains("signed modules only"),
        "{refused}"
    );
    let blocked = hunt(&mut alice, "noop-unsigned@1.0.0").await;
    assert_ne!(
        blocked.state,
        v1::HuntState::Completed as i32,
        "{blocked:?}"
    );
    let errors: Vec<_> = blocked.tasks.iter().map(|t| t.error.as_str()).collect();
    assert!(
        errors.iter().any(|e| e.contains("signed modules only")),
        "{errors:?}"
    );
    let trusted = hunt(&mut alice, "noop@1.0.0").await;
    assert_eq!(
        trusted.state,
        v1::HuntState::Completed as i32,
        "{trusted:?}"
    );
    // Untrusting the key makes its modules unsigned again.
    admin.untrust_key("release").await.expect("untrust");
    let untrusted = hunt(&mut alice, "noop@1.0.0").await;
    let errors: Vec<_> = untrusted.tasks.iter().map(|t| t.error.as_str()).collect();
    assert!(
        errors.iter().any(|e| e.contains("no longer trusts")),
        "{errors:?}"
    );

    // Refused uploads are in the audit trail with the module they named.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let page = admin
            .list_audit(v1::ListAuditRequest {
                principal: "hunter:mallory".into(),
                refused_only: true,
                ..Default::default()
            })
            .await
            .expect("audit");
        if page
            .records
            .iter()
            .any(|r| r.rpc.ends_with("UploadModule") && r.target == "module noop@9.9.9")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", page.records);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shutdown().await;
}

/// `bytes` with a custom section appended: the same component, another digest.
fn test_bytes_variant(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    // Custom section (id 0): size, name length, name, payload.
    let name = b"quarry-test";
    let payload = format!("{}", out.len());
    out.push(0);
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload.as_bytes());
    out
}
