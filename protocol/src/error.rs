//! The one error type of this crate, [`ProtocolError`].
//!
//! Owns the error variants the server and the agent match on when a message from the other side
//! is refused. Variants are part of the wire contract's API: add new ones, do not repurpose old
//! ones. Must not import anything from the server or the agent.

use crate::CanonicalError;

/// Why a message, key or field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, not a signature envelope, or does not deserialize into the expected type; the
    /// string is serde's message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The envelope holds no signature whose keyid is the expected key's.
    #[error("no signature by the expected key")]
    NoSignatureForKey,
    /// Signatures by the expected key are present, but none verifies.
    #[error("signature does not verify")]
    BadSignature,
    /// The value has no canonical JSON form (it holds a float, for example).
    #[error("not encodable as canonical JSON: {0}")]
    NotCanonical(String),
    /// Not a usable ed25519 public key.
    #[error("invalid ed25519 public key: {0}")]
    InvalidPublicKey(String),
    /// A field is present and well typed, but its value is refused.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The field's name on the wire.
        field: &'static str,
        /// A human sentence saying what is wrong.
        reason: String,
    },
    /// The director's target `custom`, without the director's own keys, is not exactly the image
    /// repository's `custom` for that target.
    #[error("director custom differs from the image repository's custom")]
    DirectorCustomMismatch,
}

impl From<CanonicalError> for ProtocolError {
    fn from(err: CanonicalError) -> Self {
        Self::NotCanonical(err.to_string())
    }
}
