//! TLS material of one node or client: a CA bundle to trust, and its own
//! certificate and key. Servers ask every caller for a certificate signed
//! by that CA (a caller without one may still present a bearer token);
//! clients check the server against the same CA. A server picks up new
//! files (a renewed certificate, a new CA bundle) without a restart.

use crate::error::{Result, SecurityError, material};
use crate::identity::Principal;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often a server looks for changed certificate files.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Where a node's or client's TLS files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) that sign every Quarry certificate.
    pub ca: PathBuf,
    /// This party's certificate (PEM; a chain, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// What the files held when read.
struct Material {
    roots: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| SecurityError::Io {
        context: format!("cannot read the {what} {}", path.display()),
        source,
    })
}

fn certificates(pem: &[u8], path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| material(format!("the {what} {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(material(
            format!("the {what} {}", path.display()),
            "holds no PEM certificate",
        ));
    }
    Ok(certs)
}

impl TlsFiles {
    /// The three files, or none: naming only some is an error that says
    /// which are missing.
    pub fn from_flags(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<Self>> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(Self { ca, cert, key })),
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    (ca.is_none(), "--tls-ca"),
                    (cert.is_none(), "--tls-cert"),
                    (key.is_none(), "--tls-key"),
                ]
                .into_iter()
                .filter_map(|(missing, flag)| missing.then_some(flag))
                .collect();
                Err(SecurityError::TlsRequired(format!(
                    "TLS needs a CA, a certificate and a key; missing {} (make them with `quarry certs init` and `quarry certs issue`)",
                    missing.join(", ")
                )))
            }
        }
    }

    fn load(&self) -> Result<Material> {
        let ca = read(&self.ca, "CA bundle")?;
        let cert = read(&self.cert, "certificate")?;
        let key = read(&self.key, "private key")?;
        let roots = certificates(&ca, &self.ca, "CA bundle")?;
        let chain = certificates(&cert, &self.cert, "certificate")?;
        let parsed = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| material(format!("the private key {}", self.key.display()), e))?;
        Ok(Material {
            roots,
            chain,
            key: parsed,
        })
    }

    /// The principal this party's own certificate names.
    pub fn principal(&self) -> Result<Principal> {
        let loaded = self.load()?;
        Principal::from_certificate(&loaded.chain[0])
            .map_err(|e| SecurityError::Identity(format!("{}: {e}", self.cert.display())))
    }

    fn modified(&self) -> Option<[SystemTime; 3]> {
        let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Some([time(&self.ca)?, time(&self.cert)?, time(&self.key)?])
    }

    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let loaded = self.load()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for root in loaded.roots {
            roots
                .add(root)
                .map_err(|e| material_err(&self.ca, "CA bundle", e))?;
        }
        // A caller may come with a token instead of a certificate; the
        // service decides what an anonymous caller may do (nothing, today).
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| material_err(&self.ca, "CA bundle", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| material("TLS protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(loaded.chain, loaded.key)
            .map_err(|e| material_err(&self.cert, "certificate and key", e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

fn material_err(path: &Path, what: &str, detail: impl ToString) -> SecurityError {
    material(format!("the {what} {}", path.display()), detail)
}

/// A server's TLS configuration, reloaded when its files change.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<(Arc<rustls::ServerConfig>, Option<[SystemTime; 3]>)>,
}

impl ServerTls {
    /// Loads the files; errors name the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>> {
        let modified = files.modified();
        let config = files.server_config()?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((config, modified)),
        }))
    }

    /// The files it serves from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current.read().ok().map(|current| current.0.clone())
    }

    /// Reloads the files if any changed since the last load. A file that
    /// cannot be used keeps the previous configuration (and is logged), so
    /// a half-copied renewal never takes a node down.
    pub fn reload_if_changed(&self) -> bool {
        let modified = self.files.modified();
        let Ok(current) = self.current.read() else {
            return false;
        };
        if modified.is_none() || modified == current.1 {
            return false;
        }
        drop(current);
        match self.files.server_config() {
            Ok(config) => {
                if let Ok(mut current) = self.current.write() {
                    *current = (config, modified);
                }
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate files reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "changed TLS files cannot be used; keeping the previous ones");
                if let Ok(mut current) = self.current.write() {
                    current.1 = modified;
                }
                false
            }
        }
    }

    /// Checks for changed files every [`RELOAD_EVERY`] until dropped.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let Some(tls) = tls.upgrade() else { return };
                tls.reload_if_changed();
            }
        })
    }
}

/// An endpoint for `url`: with `tls`, over TLS with this party's
/// certificate (the URL must be `https://`); without, plaintext (the URL
/// must be `http://`). A mismatch is named rather than left to fail as a
/// handshake error.
pub fn endpoint(url: &str, tls: Option<&TlsFiles>) -> Result<tonic::transport::Endpoint> {
    client_endpoint(
        url,
        tls.map(|files| files.ca.as_path()),
        tls.map(|files| (files.cert.as_path(), files.key.as_path())),
    )
}

/// An endpoint for `url` trusting the CA in `ca` (which makes it TLS) and
/// presenting `identity` (certificate and key) if given; a caller without
/// a certificate authenticates with a bearer token instead.
pub fn client_endpoint(
    url: &str,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<tonic::transport::Endpoint> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| SecurityError::Identity(format!("invalid URL {url:?}: {e}")))?;
    match (ca, url.starts_with("https://")) {
        (Some(ca), true) => {
            let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
                tonic::transport::Certificate::from_pem(read(ca, "CA bundle")?),
            );
            if let Some((cert, key)) = identity {
                config = config.identity(tonic::transport::Identity::from_pem(
                    read(cert, "certificate")?,
                    read(key, "private key")?,
                ));
            }
            endpoint
                .tls_config(config)
                .map_err(|e| material("TLS client configuration", e))
        }
        (None, false) => Ok(endpoint),
        (Some(_), false) => Err(SecurityError::TlsRequired(format!(
            "{url} is plaintext but TLS is configured: use https://"
        ))),
        (None, true) => Err(SecurityError::TlsRequired(format!(
            "{url} is https but no CA is given: pass --tls-ca (and --tls-cert/--tls-key, or --token)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;
    use crate::identity::{Principal, Role};

    fn touch_later(path: &Path, seconds: u64) {
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        file.set_modified(SystemTime::now() + Duration::from_secs(seconds))
            .expect("set mtime");
    }

    #[test]
    fn changed_files_are_picked_up_and_unusable_ones_keep_the_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        certs::init_ca(dir.path(), "Test CA", 2).expect("CA");
        let node = Principal::new(Role::Coordinator, "1").expect("principal");
        let issued =
            certs::issue(dir.path(), &node, &["127.0.0.1".into()], 2, dir.path()).expect("issue");
        let files = TlsFiles {
            ca: dir.path().join(certs::CA_CERT),
            cert: issued.cert.clone(),
            key: issued.key.clone(),
        };
        let tls = ServerTls::load(files.clone()).expect("load");
        let first = tls.config().expect("config");
        assert!(!tls.reload_if_changed(), "nothing changed");

        // A renewal: new certificate and key in place of the old ones.
        let renewed = tempfile::tempdir().expect("tempdir");
        let fresh = certs::issue(dir.path(), &node, &["127.0.0.1".into()], 2, renewed.path())
            .expect("issue");
        std::fs::copy(&fresh.cert, &issued.cert).expect("copy");
        std::fs::copy(&fresh.key, &issued.key).expect("copy");
        touch_later(&issued.cert, 10);
        assert!(tls.reload_if_changed(), "the renewal is loaded");
        let second = tls.config().expect("config");
        assert!(
            !Arc::ptr_eq(&first, &second),
            "new connections get the new files"
        );

        // A half-copied certificate is not used; the renewal stays.
        std::fs::write(&issued.cert, b"-----BEGIN CERTIFICATE-----\nnot base64").expect("write");
        touch_later(&issued.cert, 20);
        assert!(!tls.reload_if_changed(), "an unusable file is refused");
        assert!(Arc::ptr_eq(&second, &tls.config().expect("config")));
    }

    #[test]
    fn naming_only_some_files_says_which_are_missing() {
        let err = TlsFiles::from_flags(Some("ca.pem".into()), None, Some("k".into()))
            .expect_err("incomplete");
        assert!(err.to_string().contains("missing --tls-cert"), "{err}");
        assert!(
            TlsFiles::from_flags(None, None, None)
                .expect("none")
                .is_none()
        );
    }
}
