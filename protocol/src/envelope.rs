//! TUF's signature envelope, `{"signed": …, "signatures": [{"keyid", "sig"}]}`, for device messages.
//!
//! Owns signing and verifying with one ed25519 key over the OLPC canonical JSON of `signed`.
//! Verification canonicalises the `signed` value exactly as received (unknown fields included),
//! so a verifier never checks a signature over bytes other than those the signer produced, and
//! deserialises into a typed message only afterwards. Must not depend on tough: the agent links
//! this crate on small devices.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ProtocolError, canonical_json, ed25519_keyid};

/// A signed message: the payload and its signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<T> {
    /// The payload the signatures cover, in its canonical JSON form.
    pub signed: T,
    /// One entry per signing key; entries by unknown keys are ignored by [`verify`].
    pub signatures: Vec<Signature>,
}

/// One signature inside an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signer's TUF keyid, see [`ed25519_keyid`].
    pub keyid: String,
    /// The 64-byte ed25519 signature, lowercase hex.
    pub sig: String,
}

/// Signs `signed` with `key`: an ed25519 signature over `canonical_json(&signed)`.
///
/// Fails with [`ProtocolError::NotCanonical`] if `signed` has no canonical form (a float).
pub fn sign<T: Serialize>(signed: T, key: &SigningKey) -> Result<Envelope<T>, ProtocolError> {
    let message = canonical_json(&signed)?;
    let signature = Signature {
        keyid: ed25519_keyid(key.verifying_key().as_bytes()),
        sig: hex::encode(key.sign(&message).to_bytes()),
    };
    Ok(Envelope { signed, signatures: vec![signature] })
}

/// Verifies that `body` is an envelope signed by `public` and returns its `signed` value.
///
/// At least one signature must carry `public`'s keyid ([`ProtocolError::NoSignatureForKey`]
/// otherwise) and at least one of those must verify strictly over the canonical JSON of `signed`
/// ([`ProtocolError::BadSignature`] otherwise). Signatures by other keys are ignored.
pub fn verify(body: &[u8], public: &VerifyingKey) -> Result<Value, ProtocolError> {
    let unchecked = unchecked(body, public)?;
    let verified = unchecked.verifies_strictly(public);
    unchecked.into_signed(verified)
}

/// An envelope taken apart for a signature check made elsewhere: [`verify`] in two steps, so
/// that a server can check many envelopes' signatures at once (ed25519 batch verification).
#[derive(Debug)]
pub struct Unchecked {
    signed: Value,
    message: Vec<u8>,
    signatures: Vec<ed25519_dalek::Signature>,
}

impl Unchecked {
    /// The canonical JSON of `signed`: what the signatures must cover.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// The signatures that carry the key's keyid and are 64 bytes of hex (possibly none).
    pub fn signatures(&self) -> &[ed25519_dalek::Signature] {
        &self.signatures
    }

    /// Whether one of [`Self::signatures`] verifies strictly (`verify_strict`) over
    /// [`Self::message`] with `public`.
    pub fn verifies_strictly(&self, public: &VerifyingKey) -> bool {
        self.signatures.iter().any(|s| public.verify_strict(&self.message, s).is_ok())
    }

    /// `signed`, if `verified` says that one of [`Self::signatures`] verified over
    /// [`Self::message`]; [`ProtocolError::BadSignature`] otherwise.
    pub fn into_signed(self, verified: bool) -> Result<Value, ProtocolError> {
        if verified { Ok(self.signed) } else { Err(ProtocolError::BadSignature) }
    }

    /// [`Self::into_signed`], deserialised into `T` (as [`open`] does).
    pub fn open<T: DeserializeOwned>(self, verified: bool) -> Result<T, ProtocolError> {
        serde_json::from_value(self.into_signed(verified)?).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}

/// Parses `body` and canonicalises its `signed` value for a check of `public`'s signature.
///
/// Fails as [`verify`] does before any signature is checked: [`ProtocolError::Malformed`], or
/// [`ProtocolError::NoSignatureForKey`] when no signature carries `public`'s keyid.
pub fn unchecked(body: &[u8], public: &VerifyingKey) -> Result<Unchecked, ProtocolError> {
    let envelope: Envelope<Value> =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let keyid = ed25519_keyid(public.as_bytes());
    let ours: Vec<&Signature> = envelope.signatures.iter().filter(|s| s.keyid == keyid).collect();
    if ours.is_empty() {
        return Err(ProtocolError::NoSignatureForKey);
    }
    let message = canonical_json(&envelope.signed)?;
    let signatures = ours.into_iter().filter_map(|s| parse_signature(&s.sig)).collect();
    Ok(Unchecked { signed: envelope.signed, message, signatures })
}

/// [`verify`], then deserialises the verified `signed` value into `T`.
///
/// `T` is built from the verified value, never from `body` again, so both see the same data even
/// if `body` repeats a key. Fails with [`ProtocolError::Malformed`] when it does not fit `T`.
pub fn open<T: DeserializeOwned>(body: &[u8], public: &VerifyingKey) -> Result<T, ProtocolError> {
    let signed = verify(body, public)?;
    serde_json::from_value(signed).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Reads `signed` without checking any signature, for the one thing a verifier needs first: which
/// key to verify with (a report's `device_id`, an enrollment's `public_key`). Never act on
/// anything else it returns.
pub(crate) fn peek_unverified<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    let envelope: Envelope<T> = serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    Ok(envelope.signed)
}

fn parse_signature(sig_hex: &str) -> Option<ed25519_dalek::Signature> {
    let mut bytes = [0u8; 64];
    hex::decode_to_slice(sig_hex, &mut bytes).ok()?;
    Some(ed25519_dalek::Signature::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use serde_json::json;

    fn key() -> SigningKey {
        SigningKey::generate(&mut OsRng)
    }

    fn body(envelope: &Envelope<Value>) -> Vec<u8> {
        serde_json::to_vec(envelope).unwrap()
    }

    #[test]
    fn signed_value_verifies_and_is_returned_as_signed() {
        let key = key();
        let value = json!({"b": [1, -2, "x"], "a": {"z": null, "y": true}});
        let envelope = sign(value.clone(), &key).unwrap();
        assert_eq!(envelope.signatures[0].sig.len(), 128);
        assert_eq!(verify(&body(&envelope), &key.verifying_key()).unwrap(), value);
    }

    #[test]
    fn verification_does_not_depend_on_key_order_or_whitespace_of_the_body() {
        let key = key();
        let envelope = sign(json!({"a": 1, "b": 2}), &key).unwrap();
        let sig = &envelope.signatures[0];
        let body = format!(
            r#"{{ "signatures": [ {{"sig": "{}", "keyid": "{}"}} ],
                 "signed": {{ "b": 2,   "a": 1 }} }}"#,
            sig.sig, sig.keyid
        );
        assert!(verify(body.as_bytes(), &key.verifying_key()).is_ok());
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let key = key();
        let mut envelope = sign(json!({"counter": 1}), &key).unwrap();
        envelope.signed["counter"] = json!(2);
        assert_eq!(verify(&body(&envelope), &key.verifying_key()), Err(ProtocolError::BadSignature));
    }

    #[test]
    fn signature_that_is_not_hex_of_64_bytes_is_a_bad_signature() {
        let key = key();
        for sig in ["zz", "", &"ab".repeat(63), &"ab".repeat(65)] {
            let mut envelope = sign(json!({}), &key).unwrap();
            envelope.signatures[0].sig = sig.to_owned();
            assert_eq!(verify(&body(&envelope), &key.verifying_key()), Err(ProtocolError::BadSignature), "{sig}");
        }
    }

    #[test]
    fn signatures_by_other_keys_are_ignored_but_one_by_ours_is_required() {
        let (ours, other) = (key(), key());
        let mut envelope = sign(json!({"a": 1}), &other).unwrap();
        assert_eq!(verify(&body(&envelope), &ours.verifying_key()), Err(ProtocolError::NoSignatureForKey));
        // A valid signature by ours after a failing one by someone else still verifies.
        envelope.signatures.push(sign(json!({"a": 1}), &ours).unwrap().signatures.remove(0));
        envelope.signatures[0].sig = "00".repeat(64);
        assert!(verify(&body(&envelope), &ours.verifying_key()).is_ok());
    }

    #[test]
    fn float_in_signed_is_refused_before_any_signature_check() {
        let key = key();
        assert!(matches!(sign(json!({"a": 1.5}), &key), Err(ProtocolError::NotCanonical(_))));
        let keyid = ed25519_keyid(key.verifying_key().as_bytes());
        let body = format!(r#"{{"signed": {{"a": [1.0]}}, "signatures": [{{"keyid": "{keyid}", "sig": "00"}}]}}"#);
        assert!(matches!(verify(body.as_bytes(), &key.verifying_key()), Err(ProtocolError::NotCanonical(_))));
    }

    #[test]
    fn bodies_that_are_not_envelopes_are_malformed() {
        let key = key();
        let keyid = ed25519_keyid(key.verifying_key().as_bytes());
        let bodies = [
            "not json".to_owned(),
            r#"{"signed": {}}"#.to_owned(),
            r#"{"signatures": []}"#.to_owned(),
            format!(r#"{{"signed": {{}}, "signatures": [{{"keyid": "{keyid}"}}]}}"#),
            r#"{"signed": {}, "signatures": [], "extra": 1}"#.to_owned(),
        ];
        for body in bodies {
            assert!(
                matches!(verify(body.as_bytes(), &key.verifying_key()), Err(ProtocolError::Malformed(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn open_deserialises_only_after_verifying() {
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Msg {
            a: u64,
        }
        let key = key();
        let good = serde_json::to_vec(&sign(json!({"a": 7}), &key).unwrap()).unwrap();
        assert_eq!(open::<Msg>(&good, &key.verifying_key()).unwrap(), Msg { a: 7 });
        let wrong_shape = serde_json::to_vec(&sign(json!({"a": "7"}), &key).unwrap()).unwrap();
        assert!(matches!(open::<Msg>(&wrong_shape, &key.verifying_key()), Err(ProtocolError::Malformed(_))));
    }
}
