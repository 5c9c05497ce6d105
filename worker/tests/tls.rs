//! A worker on mutual TLS: its ingest takes logs only from callers whose
//! certificate gives them a shipping role (admin, automation), refuses the
//! rest and anonymous callers, and a worker without TLS will not listen
//! beyond loopback. A real worker on a loopback port, certificates from
//! `quarry_security::certs`.

use quarry_security::{Principal, Role, TlsFiles, certs};
use quarry_worker::{Worker, WorkerConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

fn files(pki: &Path, role: Role, name: &str) -> TlsFiles {
    let principal = Principal::new(role, name).expect("principal");
    let issued = certs::issue(pki, &principal, &["127.0.0.1".into()], 2, pki).expect("issue");
    TlsFiles {
        ca: pki.join(certs::CA_CERT),
        cert: issued.cert,
        key: issued.key,
    }
}

fn config(dir: &Path, listen: SocketAddr, tls: Option<TlsFiles>) -> WorkerConfig {
    WorkerConfig {
        id: quarry_proto::WorkerId::new("w1".to_owned()),
        // Nothing listens there: the worker keeps retrying, which is fine.
        coordinator: "https://127.0.0.1:9".to_owned(),
        data_dir: dir.join("worker"),
        listen,
        slots: 1,
        tls,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_takes_logs_only_from_shipping_roles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    certs::init_ca(&pki, "Test CA", 2).expect("CA");
    let worker = Worker::start(config(
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(files(&pki, Role::Worker, "w1")),
    ))
    .await
    .expect("worker starts");
    let url = format!("https://{}", worker.addr());
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"a\":1,\"@timestamp\":\"2024-01-01T00:00:00Z\"}\n",
    )
    .expect("input");
    let ingest = |tls: TlsFiles| {
        let (url, input) = (url.clone(), input.clone());
        async move {
            let credentials = quarry_client::Credentials::from(Some(&tls));
            quarry_client::ingest_file_with(
                &url,
                &credentials,
                "logs",
                HashMap::new(),
                None,
                &input,
            )
            .await
        }
    };

    let shipped = ingest(files(&pki, Role::Automation, "shipper"))
        .await
        .expect("automation ingests");
    assert_eq!(shipped.events_stored, 1);
    let refused = ingest(files(&pki, Role::Viewer, "vic"))
        .await
        .expect_err("a viewer may not ingest");
    assert!(
        refused
            .to_string()
            .contains("needs the role admin or automation"),
        "{refused}"
    );
    // A coordinator's or another worker's certificate is no caller either.
    let refused = ingest(files(&pki, Role::Worker, "w2"))
        .await
        .expect_err("another worker may not ingest");
    assert!(
        refused.to_string().contains("worker:w2 may not call"),
        "{refused}"
    );
    assert_eq!(
        worker
            .store()
            .list()
            .iter()
            .map(|s| s.event_count)
            .sum::<u64>(),
        1,
        "only the shipper's events were stored"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_worker_without_tls_listens_on_loopback_only_and_checks_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Worker::start(config(
        dir.path(),
        SocketAddr::from(([0, 0, 0, 0], 0)),
        None,
    ))
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("without TLS"), "{err}");
    let pki = dir.path().join("pki");
    certs::init_ca(&pki, "Test CA", 2).expect("CA");
    let err = Worker::start(config(
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(files(&pki, Role::Worker, "someone-else")),
    ))
    .await
    .err()
    .expect("refused");
    assert!(
        err.to_string().contains("names worker:someone-else"),
        "{err}"
    );
}
