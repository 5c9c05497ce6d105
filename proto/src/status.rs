//! The single mapping from Quarry service errors to gRPC status codes.
//!
//! Crates describe their errors with [`ErrorKind`]; servers turn them into a
//! [`tonic::Status`] here, so every service agrees on what a code means.

/// The class of a service error, which decides its gRPC code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something impossible.
    InvalidArgument,
    /// The request names something that does not exist.
    NotFound,
    /// The thing being created exists already.
    AlreadyExists,
    /// The request conflicts with the current state (e.g. cancelling a finished hunt).
    FailedPrecondition,
    /// The caller may not do this (not the owner, an unsigned module).
    PermissionDenied,
    /// This node cannot serve now (no leader, shutting down); retry elsewhere or later.
    Unavailable,
    /// The operation did not finish in time.
    DeadlineExceeded,
    /// A bug or a storage failure.
    Internal,
    /// A write may or may not have been applied (leadership moved while it
    /// was in flight). Not retried blindly: the caller checks, or resends
    /// with the same request id, which the coordinator deduplicates.
    OutcomeUnknown,
}

/// Implemented by each crate's error type.
pub trait ServiceError: std::error::Error {
    /// The class of this error.
    fn kind(&self) -> ErrorKind;
}

/// Converts any service error into a status whose message is the error's
/// display text (which says what to do).
pub fn to_status<E: ServiceError + ?Sized>(err: &E) -> tonic::Status {
    let message = err.to_string();
    match err.kind() {
        ErrorKind::InvalidArgument => tonic::Status::invalid_argument(message),
        ErrorKind::NotFound => tonic::Status::not_found(message),
        ErrorKind::AlreadyExists => tonic::Status::already_exists(message),
        ErrorKind::FailedPrecondition => tonic::Status::failed_precondition(message),
        ErrorKind::PermissionDenied => tonic::Status::permission_denied(message),
        ErrorKind::Unavailable => tonic::Status::unavailable(message),
        ErrorKind::DeadlineExceeded => tonic::Status::deadline_exceeded(message),
        ErrorKind::Internal => tonic::Status::internal(message),
        ErrorKind::OutcomeUnknown => tonic::Status::aborted(message),
    }
}
