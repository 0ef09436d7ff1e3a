//! Wire types shared by the patchgate server and the device agent.
//!
//! Owns what both sides must agree on byte for byte: the `custom` fields the image repository
//! puts on every target, and canonical JSON (OLPC, as TUF signs it), plus
//!
//! - [`keys`]: TUF keyids of ed25519 keys, parsing hex public keys;
//! - [`envelope`]: TUF's `{"signed", "signatures"}` envelope, signing and strict verification;
//! - [`report`]: the device's signed version report and enrollment request, and their answers;
//! - [`delta`]: the `custom` of delta targets (patches between two images) and their names;
//! - [`director`]: the director's target `custom` (image `custom` + `device_id`, `rollout_id`,
//!   `action`);
//! - [`bucket`](mod@bucket): rollout bucketing, with published test vectors;
//! - [`error`]: [`ProtocolError`], the one error type callers match on;
//! - `fuzzing` (feature `fuzzing`): mutation fuzzing for the workspace's fuzz targets.
//!
//! It must not depend on the server crate, actix, sea-orm or tough: the agent links it on small
//! devices.

use serde::{Deserialize, Serialize};

pub mod bucket;
pub mod delta;
pub mod director;
pub mod envelope;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod keys;
pub mod report;

pub use bucket::{BUCKETS, bucket, in_percent};
pub use delta::{ALGORITHM_BSDIFF_ZSTD, ALGORITHM_ZSTD_PATCH, DeltaCustom, DeltaEnd, DeltaOf, delta_target_name};
pub use director::{DirectorAction, DirectorFields, check_director_custom, director_custom, split_director_custom};
pub use envelope::{Envelope, Signature, open, sign, verify};
pub use error::ProtocolError;
pub use keys::{ed25519_keyid, parse_public_key_hex};
pub use report::{
    Attempt, AttemptState, DeviceReport, EnrollAnswer, EnrollRequest, InstalledImage, ReportAnswer,
    open_enroll_request, peek_report_device_id,
};

/// The TUF specification version patchgate writes into every role.
pub const SPEC_VERSION: &str = "1.0.31";

/// What only the image repository can say about a target, in its `custom` field.
///
/// The director repeats these fields exactly, so a compromised director can reorder legitimate
/// releases but never invent a version, widen the hardware list or go below a floor. No floats:
/// canonical JSON forbids them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetCustom {
    /// The release's semantic version, e.g. `1.4.2`.
    pub version: String,
    /// Hardware ids this image may be installed on.
    pub hardware_ids: Vec<String>,
    /// The lowest version a device that installed this release may ever go back to.
    pub rollback_floor: String,
    /// When the release was published, RFC 3339 in whole seconds (UTC).
    pub released_at: String,
}

/// Errors from canonical JSON encoding.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The value could not be serialised (for example it holds a float).
    #[error("cannot encode as canonical JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Encodes `value` as OLPC canonical JSON, the byte string TUF signatures cover.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, olpc_cjson::CanonicalFormatter::new());
    value.serialize(&mut ser)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let value = serde_json::json!({"b": 1, "a": [true, "x"]});
        let bytes = canonical_json(&value).unwrap();
        assert_eq!(bytes, br#"{"a":[true,"x"],"b":1}"#);
    }

    #[test]
    fn canonical_json_refuses_floats() {
        assert!(canonical_json(&serde_json::json!({"a": 1.5})).is_err());
    }

    #[test]
    fn target_custom_round_trips_in_canonical_form() {
        let custom = TargetCustom {
            version: "1.2.3".into(),
            hardware_ids: vec!["pump-x1-revA".into()],
            rollback_floor: "0.0.0".into(),
            released_at: "2026-11-24T10:00:00Z".into(),
        };
        let bytes = canonical_json(&custom).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"hardware_ids":["pump-x1-revA"],"released_at":"2026-11-24T10:00:00Z","rollback_floor":"0.0.0","version":"1.2.3"}"#
        );
        let back: TargetCustom = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, custom);
    }
}
