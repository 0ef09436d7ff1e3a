//! The error every service returns: a stable kind the HTTP layer maps to a status, a
//! `snake_case` code and a sentence for the client; internal causes stay in `Internal`.

/// A use case that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request was malformed or invalid (400).
    #[error("{message}")]
    Invalid {
        /// Stable code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// Something named does not exist (404).
    #[error("{message}")]
    NotFound {
        /// Stable code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// The request conflicts with stored state (409).
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// The caller may not do this (403).
    #[error("{message}")]
    Forbidden {
        /// Human sentence.
        message: String,
    },
    /// The caller did not authenticate (401).
    #[error("{message}")]
    Unauthenticated {
        /// Human sentence.
        message: String,
    },
    /// A device report's counter is not above the last one accepted (409, with `last_counter`):
    /// a replay, or a device that lost its counter.
    #[error("the report counter {counter} is not above the last accepted counter {last_counter}")]
    StaleCounter {
        /// The counter in the refused report.
        counter: u64,
        /// The highest counter accepted so far.
        last_counter: u64,
    },
    /// An upload exceeded the configured cap (413).
    #[error("the file exceeds the maximum upload size of {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: u64,
    },
    /// Too many attempts; try again after `retry_after` seconds (429).
    #[error("too many failed attempts: try again in {retry_after} s")]
    Throttled {
        /// Seconds to wait.
        retry_after: i64,
    },
    /// A failure that is ours, not the caller's (500); logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    /// A 400 with `code`.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { code, message: message.into() }
    }

    /// A 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound { code, message: message.into() }
    }

    /// A 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }
}

impl From<sea_orm::DbErr> for ServiceError {
    fn from(e: sea_orm::DbErr) -> Self {
        // Services check for duplicates first; a unique violation that still happens is a
        // concurrent request that created the same thing a moment earlier: the client's to retry.
        if let Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) = e.sql_err() {
            return Self::conflict("concurrent_change", "a concurrent request created the same item; retry");
        }
        Self::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<crate::tuf::SignError> for ServiceError {
    fn from(e: crate::tuf::SignError) -> Self {
        Self::Internal(anyhow::Error::new(e))
    }
}

impl From<crate::tuf::metadata::BuildError> for ServiceError {
    fn from(e: crate::tuf::metadata::BuildError) -> Self {
        Self::Internal(anyhow::Error::new(e))
    }
}

impl From<crate::domain::names::NameError> for ServiceError {
    fn from(e: crate::domain::names::NameError) -> Self {
        Self::Invalid { code: e.code(), message: e.to_string() }
    }
}

impl ServiceError {
    /// A signed device message (`what`: "report", "request") that was refused: bad signatures
    /// are `invalid_signature`, a bad key `invalid_public_key`, anything else `invalid_code`.
    pub fn from_envelope(e: patchgate_protocol::ProtocolError, what: &str, invalid_code: &'static str) -> Self {
        use patchgate_protocol::ProtocolError as P;
        match e {
            P::NoSignatureForKey | P::BadSignature => {
                Self::invalid("invalid_signature", format!("the {what} is not signed by the device's key: {e}"))
            }
            P::InvalidPublicKey(_) => Self::invalid("invalid_public_key", e.to_string()),
            other => Self::invalid(invalid_code, other.to_string()),
        }
    }
}
