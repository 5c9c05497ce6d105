//! A certificate authority and certificates for a test or small cluster
//! (`quarry certs init|issue`). Production brings its own CA: any
//! certificate it signs works if it carries the `quarry://<role>/<name>`
//! URI ([`crate::identity`]) and the host names clients dial.

use crate::error::{Result, SecurityError, material};
use crate::identity::Principal;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA certificate's file name in a certificate directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name in a certificate directory.
pub const CA_KEY: &str = "ca.key";

/// Certificate and key files written for a principal.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// The files `issue` writes for `principal` in `dir`.
pub fn issued_paths(dir: &Path, principal: &Principal) -> Issued {
    let stem = format!("{}-{}", principal.role, principal.name);
    Issued {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that are slightly behind the issuer's.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

pub(crate) fn write_new(path: &Path, contents: &str, private: bool) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| SecurityError::Io {
        context: if source.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists already; remove it first to replace it",
                path.display()
            )
        } else {
            format!("cannot create {}", path.display())
        },
        source,
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| SecurityError::Io {
            context: format!("cannot write {}", path.display()),
            source,
        })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SecurityError::Io {
        context: format!("cannot read {}", path.display()),
        source,
    })
}

/// Makes a CA (certificate and key) in `dir`, valid for `days`. Refuses to
/// replace an existing one.
pub fn init_ca(dir: &Path, common_name: &str, days: u32) -> Result<Issued> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SecurityError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
    let key = KeyPair::generate().map_err(|e| material("generating the CA key", e))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let cert = params
        .self_signed(&key)
        .map_err(|e| material("signing the CA certificate", e))?;
    let paths = Issued {
        cert: dir.join(CA_CERT),
        key: dir.join(CA_KEY),
    };
    write_new(&paths.key, &key.serialize_pem(), true)?;
    write_new(&paths.cert, &cert.pem(), false)?;
    Ok(paths)
}

/// Issues a certificate for `principal`, signed by the CA in `ca_dir`, into
/// `out`: valid for `days`, for client and server use, for the `hosts` a
/// client dials (DNS names or IP addresses) besides the identity URI.
pub fn issue(
    ca_dir: &Path,
    principal: &Principal,
    hosts: &[String],
    days: u32,
    out: &Path,
) -> Result<Issued> {
    let ca_cert = read(&ca_dir.join(CA_CERT))?;
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join(CA_KEY))?)
        .map_err(|e| material(format!("the CA key in {}", ca_dir.display()), e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)
        .map_err(|e| material(format!("the CA certificate in {}", ca_dir.display()), e))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, principal.to_string());
    params.distinguished_name = name;
    let uri = principal
        .uri()
        .try_into()
        .map_err(|e| material("the identity URI", e))?;
    params.subject_alt_names.push(SanType::URI(uri));
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.clone()
                    .try_into()
                    .map_err(|e| material(format!("host name {host:?}"), e))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(|e| material("generating a key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| material(format!("signing the certificate for {principal}"), e))?;
    std::fs::create_dir_all(out).map_err(|source| SecurityError::Io {
        context: format!("cannot create {}", out.display()),
        source,
    })?;
    let paths = issued_paths(out, principal);
    write_new(&paths.key, &key.serialize_pem(), true)?;
    write_new(&paths.cert, &cert.pem(), false)?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    #[test]
    fn an_issued_certificate_names_its_principal_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = init_ca(dir.path(), "Test CA", 30).expect("init");
        let err = init_ca(dir.path(), "Test CA", 30).expect_err("exists");
        assert!(err.to_string().contains("exists already"), "{err}");
        let worker = Principal::new(Role::Worker, "w1").expect("principal");
        let issued = issue(
            dir.path(),
            &worker,
            &["127.0.0.1".into(), "localhost".into()],
            30,
            dir.path(),
        )
        .expect("issue");
        let pem = std::fs::read(&issued.cert).expect("read");
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("pem");
        assert_eq!(Principal::from_certificate(&der).expect("identity"), worker);
        for key in [&ca.key, &issued.key] {
            let mode = std::fs::metadata(key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
    }
}
