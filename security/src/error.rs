//! The security crate's one error type.

/// What can go wrong setting up or checking identities.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A certificate, key or CA file cannot be used.
    #[error("{context}: {detail}")]
    Material {
        /// Which file or step.
        context: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A file cannot be read or written.
    #[error("{context}: {source}")]
    Io {
        /// Which file.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An identity is malformed or missing.
    #[error("{0}")]
    Identity(String),
    /// Plaintext was asked for where only TLS is allowed.
    #[error("{0}")]
    TlsRequired(String),
}

/// The crate's result.
pub type Result<T, E = SecurityError> = std::result::Result<T, E>;

pub(crate) fn material(context: impl Into<String>, detail: impl ToString) -> SecurityError {
    SecurityError::Material {
        context: context.into(),
        detail: detail.to_string(),
    }
}
