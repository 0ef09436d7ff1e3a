//! TUF key ids and the parsing of raw ed25519 public keys.
//!
//! Owns how a device key is named on the wire: its TUF keyid, computed exactly as TUF
//! implementations (tough, python-tuf) compute it for an `ed25519` key. Must not depend on tough:
//! the agent links this crate on small devices.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::ProtocolError;

/// Key ids of every key in the repository's `keys-example/` (public development keys).
///
/// The server refuses to listen on a non-loopback address with them, and the agent refuses a root
/// that trusts one unless told `--allow-dev-keys`: anyone can sign with them. Recognised by keyid,
/// not by path, so a copy anywhere is still recognised. Regenerating `keys-example/` means updating
/// this list (a server test checks it against the files).
pub const DEV_KEYIDS: &[&str] = &[
    "86c0fd8ac542ec9e3ba57757c82b5dc1d0ffe765583cadfb821827f5da6a1759",
    "c10428236a9271ccae7a7075429b81132d9e810d7f3d8348e112955d36df7b0b",
    "0806db07300aef86a797d4bb263b455fc0adc6584db62d94fbdcbeebecda6f10",
    "bbeb9e138a285b0d6df2d40497d212fb45b7eaa7c933bafa30df6420cb9f0f23",
    "b26537d98e4ebd23998adb4dcfbf35df820f24ff7816f4d415f5431885e77dee",
    "23143db8769ab2c2281178cde1a2def558c6a8a8125c22e32b82b5e3336ccdb0",
    "54238a1cfce1b32c277c2cec33e022795359ce5d0fabb6f2666a0cb595456468",
];

/// Whether `keyid` (lowercase hex) belongs to the public development key set.
pub fn is_dev_key(keyid: &str) -> bool {
    DEV_KEYIDS.contains(&keyid)
}

/// The TUF keyid of an ed25519 public key: lowercase hex SHA-256 of the canonical JSON
/// `{"keytype":"ed25519","keyval":{"public":"<lowercase hex>"},"scheme":"ed25519"}`.
pub fn ed25519_keyid(public: &[u8; 32]) -> String {
    // Written out by hand, keys already in canonical (sorted) order, because this form cannot
    // fail while `canonical_json` returns a `Result`; a test checks both agree byte for byte.
    let key = format!(r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#, hex::encode(public));
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Parses an ed25519 public key given as exactly 64 hex characters (either case).
///
/// Refuses encodings that are not a point on the curve, and also weak (small-order) keys: they
/// are points, but `verify_strict` would never accept a signature by one, so enrolling one could
/// only produce a device that can never report.
pub fn parse_public_key_hex(s: &str) -> Result<VerifyingKey, ProtocolError> {
    let invalid = |reason: &str| ProtocolError::InvalidPublicKey(reason.to_owned());
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("must be exactly 64 hex characters"));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(s, &mut bytes).map_err(|e| ProtocolError::InvalidPublicKey(e.to_string()))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("not a point on the ed25519 curve"))?;
    if key.is_weak() {
        return Err(invalid("weak (small-order) key"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical_json;

    /// RFC 8032, section 7.1, test 1.
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn keyid_is_sha256_of_the_canonical_tuf_key_object() {
        let public = parse_public_key_hex(RFC8032_PUBLIC).unwrap().to_bytes();
        let key = serde_json::json!({
            "keytype": "ed25519",
            "keyval": {"public": RFC8032_PUBLIC},
            "scheme": "ed25519",
        });
        let expected = hex::encode(Sha256::digest(canonical_json(&key).unwrap()));
        assert_eq!(ed25519_keyid(&public), expected);
        // Computed independently with python3 hashlib over the canonical bytes.
        assert_eq!(ed25519_keyid(&public), KEYID_OF_RFC8032_PUBLIC);
    }

    const KEYID_OF_RFC8032_PUBLIC: &str = "74c181c7ad8a0855d4b55e44d2ba87aabdddb196832571f15f92fece332e4916";

    #[test]
    fn parse_accepts_either_case_and_gives_the_same_key() {
        let lower = parse_public_key_hex(RFC8032_PUBLIC).unwrap();
        let upper = parse_public_key_hex(&RFC8032_PUBLIC.to_uppercase()).unwrap();
        assert_eq!(lower, upper);
        assert_eq!(hex::encode(lower.as_bytes()), RFC8032_PUBLIC);
    }

    #[test]
    fn parse_refuses_wrong_length_and_non_hex() {
        for bad in ["", &RFC8032_PUBLIC[..62], &format!("{RFC8032_PUBLIC}00"), &RFC8032_PUBLIC.replace('d', "g")] {
            assert!(matches!(parse_public_key_hex(bad), Err(ProtocolError::InvalidPublicKey(_))), "{bad}");
        }
        // 64 characters but with a sign, which a lenient integer parser might accept.
        let signed = format!("+{}", &RFC8032_PUBLIC[1..]);
        assert!(matches!(parse_public_key_hex(&signed), Err(ProtocolError::InvalidPublicKey(_))));
    }

    #[test]
    fn parse_refuses_bytes_that_are_not_a_curve_point() {
        assert!(matches!(parse_public_key_hex(NOT_A_POINT), Err(ProtocolError::InvalidPublicKey(_))));
    }

    /// y = 2 has no x on the curve.
    const NOT_A_POINT: &str = "0200000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn parse_refuses_the_identity_point_as_weak() {
        let identity = format!("01{}", "00".repeat(31));
        assert!(matches!(parse_public_key_hex(&identity), Err(ProtocolError::InvalidPublicKey(_))));
    }
}
