//! Delta targets: a patch that turns one signed image into another, listed in the image
//! repository beside the images, in the same product role and signed by the same key.
//!
//! A delta is an ordinary TUF target (length, sha256, sha512) whose `custom` holds only
//! [`DeltaCustom`]: the algorithm, the image it applies to (`source`) and the image it produces
//! (`target`), each by name, length and sha256. A device uses a delta only when the source's
//! sha256 is the image it runs and the target is what its director assigned; whatever the delta
//! produces must then match the full target's signed length and hashes before it reaches the
//! slot. A delta never stands for a release: it has no version, hardware or floor, so nothing
//! that reads releases (the security floor, the director's cross-check) takes it for one.

use serde::{Deserialize, Serialize};

/// A bsdiff-style patch in patchgate's own container, applied with the source as a seekable
/// file and constant memory, whatever the image size:
///
/// ```text
/// "PGDELTA1"                 8 bytes
/// control length             u64, little-endian: bytes of the control section
/// diff length                u64, little-endian: bytes of the diff section
/// control section            one zstd frame: records of three LEB128 varints, `add`, `copy`
///                            and the zigzag-encoded `seek`
/// diff section               one zstd frame: `add` bytes per record, each added (wrapping) to
///                            the source byte at the current position, which then advances
/// extra section (the rest)   one zstd frame: `copy` bytes per record, output as they are
/// ```
///
/// After each record the source position moves by `seek`. The three sections are compressed
/// apart because each is far more regular alone (the diff bytes are mostly zeros), which is
/// bsdiff's insight; zstd replaces its bzip2.
pub const ALGORITHM_BSDIFF_ZSTD: &str = "bsdiff-zstd";

/// One zstd frame compressed with the whole source image as its reference prefix (what
/// `zstd --patch-from` makes). Applying it holds the source in memory, and a window as large as
/// source and target together, so it is only made, and only applied, for images of at most
/// [`ZSTD_PATCH_MAX_IMAGE`] bytes.
pub const ALGORITHM_ZSTD_PATCH: &str = "zstd-patch";

/// The largest source or target image a `zstd-patch` delta is made for (16 MiB): the device
/// then holds at most 16 MiB of source and a 32 MiB window.
pub const ZSTD_PATCH_MAX_IMAGE: u64 = 16 * 1024 * 1024;

/// The largest zstd window (log2 bytes) a `zstd-patch` delta may use (32 MiB).
pub const ZSTD_PATCH_MAX_WINDOW_LOG: u32 = 25;

/// The magic that starts a `bsdiff-zstd` delta.
pub const BSDIFF_ZSTD_MAGIC: &[u8; 8] = b"PGDELTA1";

/// The largest zstd window (log2 bytes) a section of a `bsdiff-zstd` delta may use; the agent
/// refuses larger ones, which bounds what decompression can allocate on a device (three
/// sections of at most 8 MiB each).
pub const MAX_WINDOW_LOG: u32 = 23;

/// The marker between a delta's full target name and its source version: `~` never appears in
/// a release's file name (`[A-Za-z0-9._-]`) or in a version, so a delta name never collides
/// with an image's.
pub const NAME_MARKER: &str = "~from-";

/// The target name of the delta from release `from_version` to the full target `target_name`
/// (`pump-x1/1.1.0/fw.bin` → `pump-x1/1.1.0/fw.bin~from-1.0.0`): the same three segments, so it
/// falls under the same delegation as the image it produces.
pub fn delta_target_name(target_name: &str, from_version: &str) -> String {
    format!("{target_name}{NAME_MARKER}{from_version}")
}

/// The image repository's `custom` on a delta target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaCustom {
    /// What the delta is.
    pub delta: DeltaOf,
}

/// A delta's algorithm and its two ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaOf {
    /// [`ALGORITHM_BSDIFF_ZSTD`] or [`ALGORITHM_ZSTD_PATCH`]; a device skips algorithms it does
    /// not know.
    pub algorithm: String,
    /// The image the delta applies to.
    pub source: DeltaEnd,
    /// The full image the delta produces.
    pub target: DeltaEnd,
}

/// One end of a delta: a target of the same product role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaEnd {
    /// Its target name.
    pub name: String,
    /// Its length in bytes.
    pub length: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// Writes `v` as an LEB128 varint (7 bits a byte, low first; the high bit says more follow).
pub fn write_varint(out: &mut impl std::io::Write, mut v: u64) -> std::io::Result<()> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if let Some(slot) = buf.get_mut(n) {
            *slot = if v == 0 { byte } else { byte | 0x80 };
        }
        n += 1;
        if v == 0 {
            break;
        }
    }
    out.write_all(buf.get(..n).unwrap_or(&buf))
}

/// Reads an LEB128 varint; `None` at a clean end of input (before its first byte). More than
/// ten bytes, or a value past 64 bits, is an error.
pub fn read_varint(input: &mut impl std::io::Read) -> std::io::Result<Option<u64>> {
    let mut value: u64 = 0;
    for i in 0..10u32 {
        let mut byte = [0u8; 1];
        if input.read(&mut byte)? == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a varint is cut off"));
        }
        let bits = u64::from(byte[0] & 0x7f);
        if i == 9 && bits > 1 {
            break;
        }
        value |= bits << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a varint is longer than 64 bits"))
}

/// Zigzag encoding of a signed number (0, -1, 1, -2 → 0, 1, 2, 3), so small negative seeks stay
/// short varints.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_name_keeps_three_segments_and_cannot_be_a_release_file() {
        let name = delta_target_name("pump-x1/1.1.0/fw.bin", "1.0.0");
        assert_eq!(name, "pump-x1/1.1.0/fw.bin~from-1.0.0");
        assert_eq!(name.split('/').count(), 3);
    }

    #[test]
    fn varints_and_zigzag_round_trip_and_refuse_garbage() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            write_varint(&mut buf, v).unwrap();
            assert_eq!(read_varint(&mut buf.as_slice()).unwrap(), Some(v));
        }
        assert_eq!(read_varint(&mut &[][..]).unwrap(), None);
        assert!(read_varint(&mut &[0x80u8][..]).is_err(), "cut off");
        assert!(read_varint(&mut &[0xffu8; 11][..]).is_err(), "too long");
        assert!(read_varint(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]).is_err());
        for v in [0i64, -1, 1, -2, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!((zigzag(0), zigzag(-1), zigzag(1), zigzag(-2)), (0, 1, 2, 3));
    }

    #[test]
    fn delta_custom_is_canonical_and_strict() {
        let end = |name: &str| DeltaEnd { name: name.into(), length: 3, sha256: "ab".into() };
        let custom = DeltaCustom {
            delta: DeltaOf {
                algorithm: ALGORITHM_BSDIFF_ZSTD.into(),
                source: end("p/1.0.0/f"),
                target: end("p/1.1.0/f"),
            },
        };
        let bytes = crate::canonical_json(&custom).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"delta":{"algorithm":"bsdiff-zstd","source":{"length":3,"name":"p/1.0.0/f","sha256":"ab"},"target":{"length":3,"name":"p/1.1.0/f","sha256":"ab"}}}"#
        );
        let mut extra: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        extra["version"] = "1.1.0".into();
        assert!(serde_json::from_value::<DeltaCustom>(extra).is_err(), "a delta is never also a release");
        let release = serde_json::json!({"version": "1.0.0", "hardware_ids": [], "rollback_floor": "0.0.0",
            "released_at": "2026-01-01T00:00:00Z"});
        assert!(serde_json::from_value::<DeltaCustom>(release.clone()).is_err());
        assert!(serde_json::from_slice::<crate::TargetCustom>(&bytes).is_err(), "nor a release a delta");
    }
}
