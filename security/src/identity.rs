//! Who a certificate names. Every Quarry certificate carries one URI in its
//! subject alternative names, `quarry://<role>/<name>`: a coordinator's
//! name is its raft node id, a worker's its worker id, a person's or a
//! program's whatever the operator chose. The role is fixed by whoever
//! signed the certificate, so it cannot be claimed by a caller.

use crate::error::{Result, SecurityError};
use std::fmt;
use std::str::FromStr;

/// URI scheme of Quarry identities in certificates.
pub const SCHEME: &str = "quarry://";

/// What a principal may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A member of the raft group.
    Coordinator,
    /// A worker next to its shards.
    Worker,
    /// Runs the cluster: membership, tokens, triage rules, retention.
    Admin,
    /// Writes modules, runs hunts, gives verdicts.
    Hunter,
    /// Submits hunts and schedules, imports intel, reads results.
    Automation,
    /// Reads.
    Viewer,
}

impl Role {
    /// Every role, in the order `--help` lists them.
    pub const ALL: [Role; 6] = [
        Role::Coordinator,
        Role::Worker,
        Role::Admin,
        Role::Hunter,
        Role::Automation,
        Role::Viewer,
    ];

    /// The role's name in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Admin => "admin",
            Role::Hunter => "hunter",
            Role::Automation => "automation",
            Role::Viewer => "viewer",
        }
    }

    /// Whether this is a cluster node rather than a caller of the API.
    pub fn is_node(self) -> bool {
        matches!(self, Role::Coordinator | Role::Worker)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = SecurityError;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                SecurityError::Identity(format!(
                    "unknown role {s:?}; roles are {}",
                    Role::ALL.map(Role::as_str).join(", ")
                ))
            })
    }
}

/// An authenticated caller: a role and a name within it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// What it may do.
    pub role: Role,
    /// Who it is within the role (a node id, a worker id, a person).
    pub name: String,
}

impl Principal {
    /// Checks the name: what the URI and file names can carry.
    pub fn new(role: Role, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
        if !valid {
            return Err(SecurityError::Identity(format!(
                "{name:?} cannot name a {role}: use 1 to 128 letters, digits, '-', '_', '.' or '@'"
            )));
        }
        Ok(Self { role, name })
    }

    /// The URI a certificate carries for this principal.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}", self.role, self.name)
    }

    /// Reads a `quarry://<role>/<name>` URI.
    pub fn from_uri(uri: &str) -> Result<Self> {
        let rest = uri.strip_prefix(SCHEME).ok_or_else(|| {
            SecurityError::Identity(format!("{uri:?} is not a {SCHEME} identity"))
        })?;
        let (role, name) = rest.split_once('/').ok_or_else(|| {
            SecurityError::Identity(format!("{uri:?} lacks a name: {SCHEME}<role>/<name>"))
        })?;
        Principal::new(role.parse()?, name)
    }

    /// The principal a DER certificate names, if it names exactly one.
    pub fn from_certificate(der: &[u8]) -> Result<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| SecurityError::Identity(format!("unreadable certificate: {e}")))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| SecurityError::Identity(format!("unreadable alternative names: {e}")))?;
        let mut found = names
            .into_iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
                _ => None,
            });
        let uri = found.next().ok_or_else(|| {
            SecurityError::Identity(format!(
                "the certificate for {} names no {SCHEME}<role>/<name> identity; issue it with `quarry certs issue`",
                cert.subject()
            ))
        })?;
        if found.next().is_some() {
            return Err(SecurityError::Identity(
                "the certificate names more than one Quarry identity".into(),
            ));
        }
        Principal::from_uri(uri)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_bad_ones_are_named() {
        let worker = Principal::new(Role::Worker, "w-1").expect("valid");
        assert_eq!(worker.uri(), "quarry://worker/w-1");
        assert_eq!(Principal::from_uri(&worker.uri()).expect("parse"), worker);
        assert_eq!(worker.to_string(), "worker:w-1");
        for bad in [
            "https://worker/w1",
            "quarry://worker",
            "quarry://root/x",
            "quarry://worker/",
            "quarry://worker/a/b",
        ] {
            assert!(Principal::from_uri(bad).is_err(), "{bad}");
        }
        let err = "boss".parse::<Role>().expect_err("unknown");
        assert!(err.to_string().contains("admin, hunter"), "{err}");
    }
}
