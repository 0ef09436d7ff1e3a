//! Computing a delta between two images (docs/design.md §1, "Delta targets"), in both formats
//! of `patchgate_protocol::delta`, keeping the smaller:
//!
//! - `bsdiff-zstd`: the `bidiff` crate's bsdiff matching (a suffix array of the source finds,
//!   for each stretch of the new image, the source bytes it differs least from), written as
//!   bsdiff does in three sections (controls, byte-wise differences, new bytes), each one zstd
//!   frame. Any size; a device applies it in constant memory.
//! - `zstd-patch`: one zstd frame with the source as reference prefix (`zstd --patch-from`);
//!   only for images of at most 16 MiB, since a device holds the source and a window in memory.
//!
//! Chosen by measurement (README, "Delta updates"): on consecutive releases of real binaries
//! neither alone reaches the smallest of bsdiff, xdelta3 and `zstd --patch-from`; the smaller of
//! the two does.

use std::io::{self, Write};

use patchgate_protocol::delta::{
    ALGORITHM_BSDIFF_ZSTD, ALGORITHM_ZSTD_PATCH, BSDIFF_ZSTD_MAGIC, MAX_WINDOW_LOG, ZSTD_PATCH_MAX_IMAGE,
    ZSTD_PATCH_MAX_WINDOW_LOG, write_varint, zigzag,
};

/// zstd's level for `zstd-patch` deltas and for the full image they are compared with: the
/// strongest ordinary level; a delta is computed once and downloaded by a fleet.
pub const LEVEL: i32 = 19;

/// zstd's level for the sections of a `bsdiff-zstd` delta: the strongest. Measured on esbuild
/// 0.24.0 → 0.24.1 (README, "Delta updates"): 2 % smaller than at level 19, for more time on the
/// server; the window stays at 8 MiB, so applying costs the device nothing more.
pub const SECTION_LEVEL: i32 = 22;

/// A delta is published only if it is at most this share (in percent) of the compressed full
/// image: a smaller saving is not worth a second code path on the device.
pub const MAX_SHARE_PERCENT: u64 = 70;

/// A computed delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// `bsdiff-zstd` or `zstd-patch`.
    pub algorithm: &'static str,
    /// The delta file.
    pub bytes: Vec<u8>,
}

/// The smallest delta that turns `old` into `new`: `bsdiff-zstd`, and `zstd-patch` too when both
/// images are small enough for it. CPU-bound (seconds per megabyte): run it on a blocking
/// thread.
pub fn encode(old: &[u8], new: &[u8]) -> io::Result<Delta> {
    let mut best = Delta { algorithm: ALGORITHM_BSDIFF_ZSTD, bytes: encode_bsdiff_zstd(old, new)? };
    if old.len() as u64 <= ZSTD_PATCH_MAX_IMAGE && new.len() as u64 <= ZSTD_PATCH_MAX_IMAGE {
        let patch = encode_zstd_patch(old, new)?;
        if patch.len() < best.bytes.len() {
            best = Delta { algorithm: ALGORITHM_ZSTD_PATCH, bytes: patch };
        }
    }
    Ok(best)
}

/// The `bsdiff-zstd` delta from `old` to `new`. The sections are gathered whole (together about
/// the size of `new`) and then compressed one after the other, each with its size pledged: zstd
/// sizes its match tables by the input, where a stream of unknown size at level 22 would take
/// about 640 MiB of tables per encoder, even for a small image.
pub fn encode_bsdiff_zstd(old: &[u8], new: &[u8]) -> io::Result<Vec<u8>> {
    let (mut control, mut diff, mut extra) = (Vec::new(), Vec::new(), Vec::new());
    let mut translator = bidiff::Translator::new(old, new, |c: &bidiff::Control| -> io::Result<()> {
        write_varint(&mut control, c.add.len() as u64)?;
        write_varint(&mut control, c.copy.len() as u64)?;
        write_varint(&mut control, zigzag(c.seek))?;
        diff.extend_from_slice(c.add);
        extra.extend_from_slice(c.copy);
        Ok(())
    });
    bidiff::diff(old, new, &bidiff::DiffParams::default(), |m| translator.translate(m))?;
    translator.close()?;
    let control = compress(&control)?;
    let diff = compress(&diff)?;
    let extra = compress(&extra)?;
    let mut out = Vec::with_capacity(24 + control.len() + diff.len() + extra.len());
    out.extend_from_slice(BSDIFF_ZSTD_MAGIC);
    out.extend_from_slice(&(control.len() as u64).to_le_bytes());
    out.extend_from_slice(&(diff.len() as u64).to_le_bytes());
    out.extend_from_slice(&control);
    out.extend_from_slice(&diff);
    out.extend_from_slice(&extra);
    Ok(out)
}

/// One section of a `bsdiff-zstd` delta: one zstd frame at [`SECTION_LEVEL`], its window at most
/// the device's limit.
fn compress(section: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = zstd_writer(Vec::new(), SECTION_LEVEL, MAX_WINDOW_LOG)?;
    encoder.set_pledged_src_size(Some(section.len() as u64))?;
    encoder.write_all(section)?;
    encoder.finish()
}

/// The `zstd-patch` delta from `old` to `new` (each at most 16 MiB).
pub fn encode_zstd_patch(old: &[u8], new: &[u8]) -> io::Result<Vec<u8>> {
    let both = (old.len() + new.len()).max(1) as u64;
    let window_log = (u64::BITS - (both - 1).leading_zeros()).clamp(10, ZSTD_PATCH_MAX_WINDOW_LOG);
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), LEVEL, old)?;
    encoder.window_log(window_log)?;
    encoder.long_distance_matching(true)?;
    encoder.include_checksum(true)?;
    encoder.set_pledged_src_size(Some(new.len() as u64))?;
    encoder.write_all(new)?;
    encoder.finish()
}

/// The length of `data` compressed with zstd at [`LEVEL`]: what a delta must beat.
pub fn compressed_len(data: &[u8]) -> io::Result<u64> {
    let mut out = zstd_writer(Counter(0), LEVEL, MAX_WINDOW_LOG + 1)?;
    out.set_pledged_src_size(Some(data.len() as u64))?;
    out.write_all(data)?;
    Ok(out.finish()?.0)
}

fn zstd_writer<W: Write>(w: W, level: i32, window_log: u32) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(w, level)?;
    // The device refuses larger windows; long-distance matching finds repeats across it.
    encoder.window_log(window_log)?;
    encoder.long_distance_matching(true)?;
    encoder.include_checksum(true)?;
    Ok(encoder)
}

/// Counts what is written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a delta of `delta_len` bytes saves enough against a compressed full image of
/// `full_compressed_len` bytes to be published.
pub fn worthwhile(delta_len: u64, full_compressed_len: u64) -> bool {
    u128::from(delta_len) * 100 <= u128::from(full_compressed_len) * u128::from(MAX_SHARE_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_delta_at_most_70_percent_of_the_compressed_image_is_worthwhile() {
        assert!(worthwhile(70, 100));
        assert!(!worthwhile(71, 100));
        assert!(worthwhile(0, 0));
        assert!(!worthwhile(u64::MAX, u64::MAX / 2));
    }

    #[test]
    fn a_small_change_makes_a_small_delta() {
        // Pseudo-random bytes (incompressible on their own), then a few changes.
        let mut x: u32 = 1;
        let old: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        let mut new = old.clone();
        new[1000] ^= 0xff;
        new.splice(50_000..50_010, *b"inserted here!");
        let full = compressed_len(&new).unwrap();
        assert!(full > 190_000, "random bytes do not compress: {full}");
        for delta in [encode_bsdiff_zstd(&old, &new).unwrap(), encode_zstd_patch(&old, &new).unwrap()] {
            assert!(delta.len() < 2_000, "{} bytes", delta.len());
            assert!(worthwhile(delta.len() as u64, full));
        }
        assert!(encode(&old, &new).unwrap().bytes.len() < 2_000);
    }

    /// Both formats, as the server writes them, applied as the device agent applies them.
    #[test]
    fn the_agent_builds_exactly_the_new_image_from_either_format() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut new = old.clone();
        new.splice(1000..1000, b"a new function".iter().copied());
        new.drain(200_000..200_500);
        new[150_000] ^= 1;
        let expected = patchgate_agent::download::SignedFile {
            name: "p/1.1.0/f".into(),
            length: new.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(&new)),
            sha512: Some(hex::encode(sha2::Sha512::digest(&new))),
        };
        let (source, delta, out) = (dir.path().join("old"), dir.path().join("delta"), dir.path().join("out"));
        std::fs::write(&source, &old).unwrap();
        for (algorithm, bytes) in [
            (ALGORITHM_BSDIFF_ZSTD, encode_bsdiff_zstd(&old, &new).unwrap()),
            (ALGORITHM_ZSTD_PATCH, encode_zstd_patch(&old, &new).unwrap()),
        ] {
            std::fs::write(&delta, &bytes).unwrap();
            let at = |path| patchgate_agent::delta::Source { path, length: old.len() as u64 };
            patchgate_agent::delta::apply(algorithm, &delta, at(&source), &out, &expected).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), new, "{algorithm}");
            // Against another source, the result is refused, never taken for the image.
            let mut other = old.clone();
            other[5000] ^= 0xff;
            std::fs::write(dir.path().join("other"), &other).unwrap();
            let other_path = dir.path().join("other");
            let err = patchgate_agent::delta::apply(algorithm, &delta, at(&other_path), &out, &expected);
            assert!(err.is_err(), "{algorithm}: a delta applied to another source must not verify");
        }
    }
}
