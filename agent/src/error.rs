//! [`AgentError`], the one error type of the agent, and how each kind maps to an exit code.
//!
//! The split matters to a device: a [`AgentError::Refused`] is a security event (the agent
//! reports `rejected` and never retries the same metadata into the slot), a
//! [`AgentError::Network`] is retried with backoff and never reported as a failure (docs/design.md §4:
//! network errors are not failures), a [`AgentError::Denied`] is the server refusing the device
//! itself (asking again will not help), a [`AgentError::Install`] is a failed install.

/// Why the agent refused an update: a stable code (sent in the `rejected` report's detail) and a
/// human sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A stable `snake_case` code, e.g. `unmarked_downgrade`.
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad arguments or a state directory that does not hold what the command needs.
    #[error("{0}")]
    Usage(String),
    /// Refused for security: the update (or the server's answer) does not verify.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The network or the server failed; try again later.
    #[error("network or server error: {0}")]
    Network(String),
    /// The server refused the request for good (a 4xx answer: a wrong or revoked token, a
    /// signature by another key, a decommissioned or unknown device, an invalid enrollment
    /// token): sending it again will not help; the device needs an admin or a new enrollment.
    #[error("denied by the server: {0}")]
    Denied(String),
    /// The install hook (or writing the slot) failed.
    #[error("install failed: {0}")]
    Install(String),
    /// A local failure: the state directory cannot be read or written.
    #[error("local error: {0}")]
    Local(String),
}

impl AgentError {
    /// A security refusal.
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused(Refusal::new(code, message))
    }

    /// A local I/O failure, with what was being done.
    pub fn local(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        Self::Local(format!("{what}: {err}"))
    }

    /// The process exit code the README documents for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Local(_) => 1,
            Self::Usage(_) => 2,
            Self::Refused(_) => 3,
            Self::Network(_) => 4,
            Self::Install(_) => 5,
            Self::Denied(_) => 6,
        }
    }

    /// The refusal, if this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_readme() {
        assert_eq!(AgentError::Usage("x".into()).exit_code(), 2);
        assert_eq!(AgentError::refused("bad_signature", "x").exit_code(), 3);
        assert_eq!(AgentError::Network("x".into()).exit_code(), 4);
        assert_eq!(AgentError::Install("x".into()).exit_code(), 5);
        assert_eq!(AgentError::Denied("x".into()).exit_code(), 6);
        assert_eq!(AgentError::Local("x".into()).exit_code(), 1);
    }

    #[test]
    fn a_refusal_names_its_code_first() {
        let err = AgentError::refused("unmarked_downgrade", "1.0.0 is older than 1.1.0");
        assert_eq!(
            err.refusal().map(ToString::to_string).as_deref(),
            Some("unmarked_downgrade: 1.0.0 is older than 1.1.0")
        );
    }
}
