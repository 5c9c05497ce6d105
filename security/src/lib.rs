//! Who is calling, and over what: mutual TLS for every Quarry connection
//! (coordinator to coordinator, worker to coordinator, client to either),
//! identities bound to certificates (`quarry://<role>/<name>`), and a CA
//! with certificates for a test or small cluster.
//!
//! Servers accept connections through [`listen::incoming`], which hands each
//! request a [`PeerInfo`] naming the caller's [`Principal`]; plaintext is
//! allowed on loopback addresses only ([`listen::check_plaintext`]).

pub mod access;
pub mod audit;
pub mod certs;
pub mod error;
pub mod identity;
pub mod listen;
pub mod module_sign;
pub mod tls;
pub mod token;

pub use error::{Result, SecurityError};
pub use identity::{Principal, Role};
pub use listen::PeerInfo;
pub use tls::{ServerTls, TlsFiles};
