//! The canonical JSON of a device's three director roles (`targets`, `snapshot`, `timestamp`),
//! written directly in canonical key order.
//!
//! Every first report after a stage opens signs these three roles for its device. Built as
//! tough's schema types and encoded by the general canonical encoder, which collects every
//! object's keys in buffers to sort them and NFC-normalises every string character by
//! character, their encoding took about a tenth of the server's CPU during first reports (9 %
//! less with this module, in alternating runs). Their shape is fixed and almost every string in
//! them is a date, a digest or a spec version, so they are written here; the strings that could
//! need escaping or normalising (the target's name and `sha512`, the director's `custom`) still
//! go through the general encoder unless they are plain printable ASCII. The tests compare every
//! function with tough's types encoded the general way.

use std::io::Write as _;

use jiff::Timestamp;
use patchgate_protocol::SPEC_VERSION;
use tough::TargetName;

use super::metadata::{BuildError, DirectorTarget};
use super::sign::{SignedMetadata, push_hex};

/// A device's director targets role naming `entry` (or nothing), as canonical JSON.
pub fn targets(version: u64, expires: Timestamp, entry: Option<&DirectorTarget>) -> Result<Vec<u8>, BuildError> {
    let mut out = start("targets", expires, 768);
    push_spec_version(&mut out);
    out.extend_from_slice(br#","targets":{"#);
    if let Some(entry) = entry {
        // The same check tough's schema makes of a target's name.
        let name = TargetName::new(entry.name.clone()).map_err(|e| BuildError(e.to_string()))?;
        push_str(&mut out, name.raw())?;
        out.push(b':');
        out.push(b'{');
        if !entry.custom.is_empty() {
            out.extend_from_slice(br#""custom":"#);
            let custom = patchgate_protocol::canonical_json(&entry.custom).map_err(|e| BuildError(e.to_string()))?;
            out.extend_from_slice(&custom);
            out.push(b',');
        }
        out.extend_from_slice(br#""hashes":{"sha256":"#);
        push_hex_of(&mut out, &entry.sha256)?;
        out.extend_from_slice(br#","sha512":"#);
        push_str(&mut out, &entry.sha512)?;
        out.extend_from_slice(br#"},"length":"#);
        push_u64(&mut out, entry.length);
        out.push(b'}');
    }
    out.push(b'}');
    finish(out, version)
}

/// A device's director snapshot naming `targets.json` at `targets_version`, as canonical JSON.
pub fn snapshot(version: u64, expires: Timestamp, targets_version: u64) -> Result<Vec<u8>, BuildError> {
    let mut out = start("snapshot", expires, 160);
    out.extend_from_slice(br#","meta":{"targets.json":{"version":"#);
    push_version(&mut out, targets_version)?;
    out.extend_from_slice(b"}}");
    push_spec_version(&mut out);
    finish(out, version)
}

/// A device's director timestamp naming `snapshot` (version, length, SHA-256), as canonical
/// JSON.
pub fn timestamp(version: u64, expires: Timestamp, snapshot: &SignedMetadata) -> Result<Vec<u8>, BuildError> {
    let mut out = start("timestamp", expires, 256);
    out.extend_from_slice(br#","meta":{"snapshot.json":{"hashes":{"sha256":"#);
    push_hex_of(&mut out, &snapshot.sha256)?;
    out.extend_from_slice(br#"},"length":"#);
    push_u64(&mut out, snapshot.bytes.len() as u64);
    out.extend_from_slice(br#","version":"#);
    push_version(&mut out, snapshot.version)?;
    out.extend_from_slice(b"}}");
    push_spec_version(&mut out);
    finish(out, version)
}

/// `{"_type":"ROLE","expires":"…"`: how every role begins (`_type` and `expires` sort first).
fn start(role: &str, expires: Timestamp, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(br#"{"_type":""#);
    out.extend_from_slice(role.as_bytes());
    out.extend_from_slice(br#"","expires":"#);
    push_expires(&mut out, expires);
    out
}

fn push_spec_version(out: &mut Vec<u8>) {
    out.extend_from_slice(br#","spec_version":""#);
    out.extend_from_slice(SPEC_VERSION.as_bytes());
    out.push(b'"');
}

/// `,"version":N}`: how every role ends (`version` sorts last).
fn finish(mut out: Vec<u8>, version: u64) -> Result<Vec<u8>, BuildError> {
    out.extend_from_slice(br#","version":"#);
    push_version(&mut out, version)?;
    out.push(b'}');
    Ok(out)
}

fn push_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A version or threshold: TUF's start at 1.
fn push_version(out: &mut Vec<u8>, value: u64) -> Result<(), BuildError> {
    if value == 0 {
        return Err(BuildError("versions and thresholds start at 1".into()));
    }
    push_u64(out, value);
    Ok(())
}

/// `expires` as tough writes it: RFC 3339 in UTC, with only as many fractional digits as the
/// instant has (none for the whole seconds every role expires at).
fn push_expires(out: &mut Vec<u8>, expires: Timestamp) {
    let nanos = expires.subsec_nanosecond();
    let precision = match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    };
    // Writing into a Vec cannot fail; jiff's RFC 3339 has nothing to escape.
    let _ = write!(out, "\"{expires:.precision$}\"");
}

/// A JSON string in canonical form: printable ASCII other than `"` and `\` is written as it
/// is (canonical JSON escapes only those two, and NFC leaves ASCII alone); anything else goes
/// through the general encoder.
fn push_str(out: &mut Vec<u8>, s: &str) -> Result<(), BuildError> {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let encoded = patchgate_protocol::canonical_json(s).map_err(|e| BuildError(e.to_string()))?;
        out.extend_from_slice(&encoded);
    }
    Ok(())
}

/// A digest given in hex, written as tough writes decoded bytes: lowercase hex.
fn push_hex_of(out: &mut Vec<u8>, hex_digest: &str) -> Result<(), BuildError> {
    let bytes = hex::decode(hex_digest).map_err(|e| BuildError(e.to_string()))?;
    out.push(b'"');
    push_hex(out, &bytes);
    out.push(b'"');
    Ok(())
}

#[cfg(test)]
mod tests;
