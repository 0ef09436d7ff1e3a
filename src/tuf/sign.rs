//! Signing a role: canonical JSON of `signed`, one signature per key through tough's `Sign`.

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tough::sign::Sign;

use super::keys::Signer;

/// A role that could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The role could not be encoded (canonical JSON forbids floats).
    #[error("cannot encode the {role} role: {message}")]
    Encode {
        /// The role.
        role: String,
        /// Why.
        message: String,
    },
    /// A key refused to sign.
    #[error("key {keyid} failed to sign the {role} role: {message}")]
    Sign {
        /// The role.
        role: String,
        /// The key.
        keyid: String,
        /// Why.
        message: String,
    },
}

/// A signed role as it is stored and served: the exact bytes clients receive.
#[derive(Debug, Clone)]
pub struct SignedMetadata {
    /// The role name (`root`, `targets`, `snapshot`, `timestamp` or a product).
    pub role: String,
    /// The role's version.
    pub version: u64,
    /// When it expires.
    pub expires: Timestamp,
    /// The envelope, canonical JSON.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, lowercase hex.
    pub sha256: String,
}

impl SignedMetadata {
    /// A stored role (metadata bytes kept in the database) as signed metadata.
    pub fn from_stored(role: String, version: i64, expires_at: i64, bytes: Vec<u8>, sha256: String) -> Self {
        Self {
            role,
            version: u64::try_from(version).unwrap_or(0),
            expires: Timestamp::from_second(expires_at).unwrap_or(Timestamp::UNIX_EPOCH),
            bytes,
            sha256,
        }
    }
}

/// Signs an image repository role (or the director root) with every key in `signers` (each once).
pub async fn sign_role<T: Serialize>(
    role: &str,
    version: u64,
    expires: Timestamp,
    signed: T,
    signers: &[&Signer],
) -> Result<SignedMetadata, SignError> {
    let payload = patchgate_protocol::canonical_json(&signed)
        .map_err(|e| SignError::Encode { role: role.to_owned(), message: e.to_string() })?;
    sign_payload(role, role_label(role), version, expires, payload, signers).await
}

/// Signs one of a device's director roles (`targets`, `snapshot`, `timestamp`), given as the
/// canonical JSON of its `signed` part (`super::director_json`); counted in
/// `patchgate_signatures_total` as `director_{role}`, apart from the image repository's.
pub async fn sign_director_role(
    role: &str,
    version: u64,
    expires: Timestamp,
    payload: Vec<u8>,
    signer: &Signer,
) -> Result<SignedMetadata, SignError> {
    sign_payload(role, format!("director_{role}"), version, expires, payload, &[signer]).await
}

/// Signs `payload`, the canonical JSON of the role's `signed` part, with every key in
/// `signers` (each once).
async fn sign_payload(
    role: &str,
    label: String,
    version: u64,
    expires: Timestamp,
    payload: Vec<u8>,
    signers: &[&Signer],
) -> Result<SignedMetadata, SignError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut signatures = Vec::with_capacity(signers.len());
    let mut seen = std::collections::HashSet::new();
    for signer in signers {
        if !seen.insert(signer.keyid().to_owned()) {
            continue;
        }
        let sig = Sign::sign(*signer, &payload, &rng).await.map_err(|e| SignError::Sign {
            role: role.to_owned(),
            keyid: signer.keyid().to_owned(),
            message: e.to_string(),
        })?;
        let keyid = hex::decode(signer.keyid()).unwrap_or_default();
        signatures.push(RawSignature { keyid, sig });
        metrics::counter!("patchgate_signatures_total", "role" => label.clone()).increment(1);
    }
    let bytes = envelope_bytes(&payload, &signatures);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(SignedMetadata { role: role.to_owned(), version, expires, bytes, sha256 })
}

/// One signature of an envelope, as bytes: the key's id and what it signed.
struct RawSignature {
    keyid: Vec<u8>,
    sig: Vec<u8>,
}

/// The canonical JSON of `{"signed": …, "signatures": [{"keyid": …, "sig": …}, …]}` from the
/// payload's canonical JSON, which is spliced in rather than encoded a second time (the keys
/// sort as `signatures`, `signed`, and canonical JSON of a whole is made of its parts'
/// canonical JSON). The signatures are written directly: lowercase hex has nothing to escape
/// or normalise, and `keyid` sorts before `sig`, so these bytes are their canonical JSON
/// without a trip through the general encoder (which normalised every hex digit: about a
/// fifth of a director role's signing time in a profile).
fn envelope_bytes(payload: &[u8], signatures: &[RawSignature]) -> Vec<u8> {
    let hex_len: usize = signatures.iter().map(|s| 2 * (s.keyid.len() + s.sig.len()) + 24).sum();
    let mut bytes = Vec::with_capacity(payload.len() + hex_len + 28);
    bytes.extend_from_slice(br#"{"signatures":["#);
    for (i, s) in signatures.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        bytes.extend_from_slice(br#"{"keyid":""#);
        push_hex(&mut bytes, &s.keyid);
        bytes.extend_from_slice(br#"","sig":""#);
        push_hex(&mut bytes, &s.sig);
        bytes.extend_from_slice(br#""}"#);
    }
    bytes.extend_from_slice(br#"],"signed":"#);
    bytes.extend_from_slice(payload);
    bytes.push(b'}');
    bytes
}

/// Appends `bytes` as lowercase hex (canonical JSON has nothing to escape in it).
pub(super) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    // The slice is exactly twice the input's length, which is all encode_to_slice asks.
    hex::encode_to_slice(bytes, &mut out[start..]).unwrap_or_default();
}

/// Product roles share one label so metrics cardinality does not grow with products.
fn role_label(role: &str) -> String {
    match role {
        "root" | "targets" | "snapshot" | "timestamp" => role.to_owned(),
        _ => "product".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tough::schema::{Signature, Signed};

    use super::{RawSignature, envelope_bytes};

    #[test]
    fn the_spliced_envelope_is_the_envelope_encoded_whole() {
        let signature = |byte: u8| (vec![byte; 32], vec![byte.wrapping_mul(37) ^ 0xa5; 64]);
        // Keys out of order, nesting, escapes, a string NFC changes (e + combining acute).
        let signed = json!({"_type": "targets", "version": 3, "targets": {"b/1.0.0/x": {"length": 1}, "a": {}},
            "custom": {"note": "caf\u{65}\u{301} \"q\" \\ \u{1}", "list": [3, 1, {"z": null, "y": true}]}});
        for signatures in [vec![], vec![signature(1)], vec![signature(2), signature(1)], vec![signature(0xfe)]] {
            let payload = patchgate_protocol::canonical_json(&signed).unwrap();
            let tough: Vec<Signature> =
                signatures.iter().map(|(k, s)| Signature { keyid: k.clone().into(), sig: s.clone().into() }).collect();
            let whole = patchgate_protocol::canonical_json(&Signed { signed: signed.clone(), signatures: tough });
            let raw: Vec<RawSignature> =
                signatures.into_iter().map(|(keyid, sig)| RawSignature { keyid, sig }).collect();
            assert_eq!(envelope_bytes(&payload, &raw), whole.unwrap());
        }
    }
}
