//! Delta updates on the device: finding a signed delta from the running image to the assigned
//! one, and applying it with bounded memory (docs/design.md §2.6, "Deltas").
//!
//! A delta is only ever a faster way to the same bytes: it is looked up in the product's role
//! of the image repository (never taken from the director), downloaded and checked like any
//! target, applied against the running image into a staging file, and the result must match
//! the assigned target's signed length, sha256 and sha512 before anything may use it. Any
//! failure falls back to the full image.
//!
//! Memory: a `bsdiff-zstd` delta is read as three zstd streams (windows of at most 8 MiB each,
//! larger is refused), the source through a small buffer with seeks, and the output is written
//! as it is produced: nothing is held whole, whatever the image size. A `zstd-patch` delta holds
//! the source (at most 16 MiB) and a window of at most 32 MiB.

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use patchgate_protocol::delta::{
    ALGORITHM_BSDIFF_ZSTD, ALGORITHM_ZSTD_PATCH, BSDIFF_ZSTD_MAGIC, DeltaCustom, MAX_WINDOW_LOG, ZSTD_PATCH_MAX_IMAGE,
    ZSTD_PATCH_MAX_WINDOW_LOG, read_varint, unzigzag,
};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use tough::schema::Targets;

use crate::download::SignedFile;
use crate::verify::Assigned;

/// A delta the image repository lists to the assigned target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaOffer {
    /// The delta file, as the product role signed it.
    pub file: SignedFile,
    /// The sha256 of the image it applies to.
    pub source_sha256: String,
    /// The length of the image it applies to: the running image is this many bytes at the start
    /// of a file or a partition (which is usually larger than the image).
    pub source_length: u64,
    /// The sha256 of the image it produces (the assigned target's).
    pub target_sha256: String,
    /// Its algorithm (one this agent applies).
    pub algorithm: String,
}

/// The deltas the product's role lists (under its delegated paths, signed by the product's key)
/// that produce `assigned`, smallest first. Entries whose `custom` is not a delta, whose
/// algorithm this agent does not apply, whose target is not exactly `assigned`, or which are not
/// smaller than the image are skipped.
pub fn offers(image: &Targets, product: &str, assigned: &Assigned) -> Vec<DeltaOffer> {
    let Some(role) = crate::verify::product_role(image, product) else { return Vec::new() };
    let Some(listed) = role.targets.as_ref().map(|t| &t.signed.targets) else { return Vec::new() };
    let mut found: Vec<DeltaOffer> = listed
        .iter()
        .filter(|(name, _)| crate::tuf::delegates(role, name) && crate::verify::plain_name(name))
        .filter(|(name, _)| name.raw().split('/').next() == Some(product))
        .filter_map(|(name, target)| {
            let custom: DeltaCustom = serde_json::from_value(Value::Object(
                target.custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ))
            .ok()?;
            let d = custom.delta;
            let applicable = d.algorithm == ALGORITHM_BSDIFF_ZSTD
                || (d.algorithm == ALGORITHM_ZSTD_PATCH
                    && d.source.length <= ZSTD_PATCH_MAX_IMAGE
                    && d.target.length <= ZSTD_PATCH_MAX_IMAGE);
            let fits = applicable
                && d.target.name == assigned.name
                && d.target.sha256 == assigned.sha256
                && d.target.length == assigned.length
                // A delta as large as the image saves nothing.
                && target.length < assigned.length;
            fits.then(|| DeltaOffer {
                file: SignedFile::of_target(name.raw(), target),
                source_sha256: d.source.sha256,
                source_length: d.source.length,
                target_sha256: d.target.sha256,
                algorithm: d.algorithm,
            })
        })
        .collect();
    found.sort_by(|a, b| a.file.length.cmp(&b.file.length).then_with(|| a.file.name.cmp(&b.file.name)));
    found
}

/// Where a delta applies: the first `length` bytes of the file or partition at `path`.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The running image's file or partition.
    pub path: &'a Path,
    /// The image's length (a partition is usually larger).
    pub length: u64,
}

/// Applies the verified `algorithm` delta at `delta` to `source`, writing `out`, and checks that
/// the result is exactly `expected` (length, sha256 and, where signed, sha512). Blocking: run it
/// on a blocking thread. On error, `out` may hold anything and must not be used.
pub fn apply(
    algorithm: &str,
    delta: &Path,
    source: Source<'_>,
    out: &Path,
    expected: &SignedFile,
) -> Result<(), String> {
    let file = std::fs::File::create(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut sink = Sink {
        writer: BufWriter::with_capacity(256 * 1024, file),
        sha256: Sha256::new(),
        sha512: Sha512::new(),
        produced: 0,
        expected,
        out,
    };
    match algorithm {
        ALGORITHM_BSDIFF_ZSTD => apply_bsdiff_zstd(delta, source, &mut sink)?,
        ALGORITHM_ZSTD_PATCH => apply_zstd_patch(delta, source, &mut sink)?,
        other => return Err(format!("unknown delta algorithm {other:?}")),
    }
    sink.finish()
}

fn open(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))
}

/// The first bytes of every zstd frame. Checked before decoding: a build that links zstd's
/// legacy decoders (another crate of the workspace may enable them) would otherwise accept old
/// frame formats that the window limit does not cover.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// `file` positioned at `offset`, after checking that a zstd frame starts there.
fn zstd_frame_at(delta: &Path, offset: u64) -> Result<std::fs::File, String> {
    let mut file = open(delta)?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| format!("the delta: {e}"))?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(|_| "the delta is cut off".to_owned())?;
    if magic != ZSTD_MAGIC {
        return Err("the delta holds something other than a zstd frame".into());
    }
    file.seek(SeekFrom::Start(offset)).map_err(|e| format!("the delta: {e}"))?;
    Ok(file)
}

/// One section of a `bsdiff-zstd` delta, `len` bytes (or the rest) from `offset`, decompressed:
/// exactly one zstd frame, with a window of at most 8 MiB.
fn section(delta: &Path, offset: u64, len: Option<u64>) -> Result<impl Read, String> {
    let file = zstd_frame_at(delta, offset)?;
    let mut decoder = zstd::stream::read::Decoder::new(file.take(len.unwrap_or(u64::MAX)))
        .map_err(|e| format!("the delta: {e}"))?
        .single_frame();
    decoder.window_log_max(MAX_WINDOW_LOG).map_err(|e| format!("the delta: {e}"))?;
    Ok(decoder)
}

fn apply_bsdiff_zstd(delta: &Path, source: Source<'_>, sink: &mut Sink<'_>) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let bad = |what: &str| format!("the delta is not a valid bsdiff-zstd patch: {what}");
    let mut head = [0u8; 24];
    let mut file = open(delta)?;
    let total = file.metadata().map_err(|e| format!("the delta: {e}"))?.len();
    file.read_exact(&mut head).map_err(|_| bad("shorter than its header"))?;
    let field = |range: std::ops::Range<usize>| {
        head.get(range).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes).unwrap_or(u64::MAX)
    };
    if head.get(..8) != Some(BSDIFF_ZSTD_MAGIC.as_slice()) {
        return Err(bad("wrong magic"));
    }
    let (control_len, diff_len) = (field(8..16), field(16..24));
    let extra_at = control_len.checked_add(diff_len).and_then(|n| n.checked_add(24)).filter(|n| *n <= total);
    let extra_at = extra_at.ok_or_else(|| bad("its sections are longer than the file"))?;
    // Varints are read a byte at a time: through a buffer.
    let mut control = BufReader::new(section(delta, 24, Some(control_len))?);
    let mut diffs = section(delta, 24 + control_len, Some(diff_len))?;
    let mut extra = section(delta, extra_at, None)?;
    // The source is read where each record says, exactly as much as it adds: a record that
    // seeks away costs one read of its own length, never a buffer refill.
    let old = open(source.path)?;
    let source_len = source.length;
    let mut pos: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut dif = vec![0u8; 64 * 1024];
    fn cut(what: &'static str) -> impl Fn(std::io::Error) -> String {
        move |e| format!("the delta's {what} section: {e}")
    }
    // A valid delta makes at most one record per output byte (and one empty last one): more is
    // a delta built to keep the device busy.
    let mut records: u64 = 0;
    while let Some(add) = read_varint(&mut control).map_err(cut("control"))? {
        records += 1;
        if records > sink.expected.length.saturating_add(1) {
            return Err(bad("more records than output bytes"));
        }
        let copy = read_varint(&mut control).map_err(cut("control"))?.ok_or_else(|| bad("a record is cut off"))?;
        let seek = read_varint(&mut control).map_err(cut("control"))?.ok_or_else(|| bad("a record is cut off"))?;
        if add > source_len - pos {
            return Err(bad("it reads past the end of the source"));
        }
        let mut left = add;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let (out, d) = (buf.get_mut(..n).unwrap_or_default(), dif.get_mut(..n).unwrap_or_default());
            old.read_exact_at(out, pos).map_err(|e| format!("reading the source {}: {e}", source.path.display()))?;
            diffs.read_exact(d).map_err(cut("diff"))?;
            for (o, d) in out.iter_mut().zip(d.iter()) {
                *o = o.wrapping_add(*d);
            }
            sink.write(out)?;
            left -= n as u64;
            pos += n as u64;
        }
        let mut left = copy;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let out = buf.get_mut(..n).unwrap_or_default();
            extra.read_exact(out).map_err(cut("extra"))?;
            sink.write(out)?;
            left -= n as u64;
        }
        let to = i128::from(pos) + i128::from(unzigzag(seek));
        if to < 0 || to > i128::from(source_len) {
            return Err(bad("it seeks outside the source"));
        }
        pos = u64::try_from(to).unwrap_or(0);
    }
    Ok(())
}

fn apply_zstd_patch(delta: &Path, source: Source<'_>, sink: &mut Sink<'_>) -> Result<(), String> {
    let len = source.length;
    if len > ZSTD_PATCH_MAX_IMAGE {
        return Err(format!("the source is {len} bytes, more than a zstd-patch delta may have"));
    }
    let mut old = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    open(source.path)?
        .take(len)
        .read_to_end(&mut old)
        .map_err(|e| format!("reading the source {}: {e}", source.path.display()))?;
    if old.len() as u64 != len {
        return Err(format!("the source {} is shorter than the delta's {len} bytes", source.path.display()));
    }
    let frame = BufReader::new(zstd_frame_at(delta, 0)?);
    let mut patch = zstd::stream::read::Decoder::with_ref_prefix(frame, &old)
        .map_err(|e| format!("the delta: {e}"))?
        .single_frame();
    patch.window_log_max(ZSTD_PATCH_MAX_WINDOW_LOG).map_err(|e| format!("the delta: {e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = patch.read(&mut buf).map_err(|e| format!("applying the delta: {e}"))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { return Ok(()) };
        sink.write(chunk)?;
    }
}

/// Where a delta's output goes: hashed, counted (never past the signed length) and written.
struct Sink<'a> {
    writer: BufWriter<std::fs::File>,
    sha256: Sha256,
    sha512: Sha512,
    produced: u64,
    expected: &'a SignedFile,
    out: &'a Path,
}

impl Sink<'_> {
    fn write(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.produced += chunk.len() as u64;
        if self.produced > self.expected.length {
            return Err(format!(
                "the delta produces more than the signed {} bytes of {}",
                self.expected.length, self.expected.name
            ));
        }
        self.sha256.update(chunk);
        self.sha512.update(chunk);
        self.writer.write_all(chunk).map_err(|e| format!("writing {}: {e}", self.out.display()))
    }

    fn finish(self) -> Result<(), String> {
        let expected = self.expected;
        if self.produced != expected.length {
            return Err(format!(
                "the delta produced {} bytes, not the signed {} of {}",
                self.produced, expected.length, expected.name
            ));
        }
        let got = hex::encode(self.sha256.finalize());
        if got != expected.sha256 {
            return Err(format!(
                "the delta produced sha256 {got}, not the signed {} of {}",
                expected.sha256, expected.name
            ));
        }
        if let Some(want) = &expected.sha512
            && &hex::encode(self.sha512.finalize()) != want
        {
            return Err(format!("the delta produced the wrong sha512 for {}", expected.name));
        }
        let file = self.writer.into_inner().map_err(|e| format!("writing {}: {e}", self.out.display()))?;
        file.sync_all().map_err(|e| format!("writing {}: {e}", self.out.display()))
    }
}

/// The sha256 of the first `length` bytes of the file or partition at `path`, lowercase hex;
/// `None` if it holds fewer. Blocking.
pub fn sha256_prefix(path: &Path, length: u64) -> std::io::Result<Option<String>> {
    let mut file = std::fs::File::open(path)?.take(length);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read: u64 = 0;
    loop {
        let n = file.read(&mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
        hasher.update(chunk);
        read += n as u64;
    }
    Ok((read == length).then(|| hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use patchgate_protocol::delta::{write_varint, zigzag};

    use super::*;

    /// A `bsdiff-zstd` delta of the given records (add differences, copied bytes, seek).
    fn patch(records: &[(&[u8], &[u8], i64)]) -> Vec<u8> {
        let (mut control, mut diff, mut extra) = (Vec::new(), Vec::new(), Vec::new());
        for (add, copy, seek) in records {
            write_varint(&mut control, add.len() as u64).unwrap();
            write_varint(&mut control, copy.len() as u64).unwrap();
            write_varint(&mut control, zigzag(*seek)).unwrap();
            diff.extend_from_slice(add);
            extra.extend_from_slice(copy);
        }
        let z = |b: &[u8]| zstd::encode_all(b, 3).unwrap();
        let (control, diff, extra) = (z(&control), z(&diff), z(&extra));
        let mut out = BSDIFF_ZSTD_MAGIC.to_vec();
        out.extend_from_slice(&(control.len() as u64).to_le_bytes());
        out.extend_from_slice(&(diff.len() as u64).to_le_bytes());
        out.extend_from_slice(&control);
        out.extend_from_slice(&diff);
        out.extend_from_slice(&extra);
        out
    }

    fn signed(bytes: &[u8]) -> SignedFile {
        SignedFile {
            name: "p/1.1.0/f".into(),
            length: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            sha512: Some(hex::encode(Sha512::digest(bytes))),
        }
    }

    #[test]
    fn a_delta_produces_exactly_the_signed_image_or_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (source, delta, out) = (dir.path().join("old"), dir.path().join("d"), dir.path().join("new"));
        let apply = |expected: &SignedFile| {
            apply(ALGORITHM_BSDIFF_ZSTD, &delta, Source { path: &source, length: 6 }, &out, expected)
        };
        // The image is the first six bytes of a larger "partition".
        std::fs::write(&source, b"abcdef-and-the-rest-of-the-partition").unwrap();
        // "abcd" + [0,1,0,1] = "acce", then "xyz", back 3 to "bcd" + 0 = "bcd".
        std::fs::write(&delta, patch(&[(&[0, 1, 0, 1], b"xyz", -3), (&[0, 0, 0], b"", 0)])).unwrap();
        let want = b"accexyzbcd";
        apply(&signed(want)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), want);

        let err = apply(&signed(b"accexyzbcD")).unwrap_err();
        assert!(err.contains("sha256"), "{err}");
        let err = apply(&signed(b"accex")).unwrap_err();
        assert!(err.contains("more than the signed 5 bytes"), "{err}");
        let err = apply(&signed(b"accexyzbcd!")).unwrap_err();
        assert!(err.contains("produced 10 bytes"), "{err}");

        for (bytes, says) in [
            (b"not a delta at all, long enough".to_vec(), "wrong magic"),
            (b"PGDELTA1".to_vec(), "shorter than its header"),
            (patch(&[(&[0; 7], b"", 0)]), "past the end of the source"),
            (patch(&[(&[0; 2], b"", -3)]), "outside the source"),
            (patch(&[(&[0; 2], b"", 5)]), "outside the source"),
            (patch(&[(&[][..], &b""[..], 0); 12]), "more records than output bytes"),
        ] {
            std::fs::write(&delta, &bytes).unwrap();
            let err = apply(&signed(want)).unwrap_err();
            assert!(err.contains(says), "{says}: {err}");
        }
        let mut lying = patch(&[(&[0; 2], b"", 0)]);
        lying[8] = 0xff;
        std::fs::write(&delta, &lying).unwrap();
        assert!(apply(&signed(want)).unwrap_err().contains("longer than the file"));
        let err = super::apply("xdelta", &delta, Source { path: &source, length: 6 }, &out, &signed(want)).unwrap_err();
        assert!(err.contains("unknown delta algorithm"), "{err}");
    }

    #[test]
    fn a_zstd_patch_delta_refuses_a_source_too_large_for_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let (source, delta, out) = (dir.path().join("old"), dir.path().join("d"), dir.path().join("new"));
        std::fs::write(&delta, b"irrelevant").unwrap();
        let file = std::fs::File::create(&source).unwrap();
        file.set_len(ZSTD_PATCH_MAX_IMAGE + 1).unwrap();
        let big = Source { path: &source, length: ZSTD_PATCH_MAX_IMAGE + 1 };
        let err = apply(ALGORITHM_ZSTD_PATCH, &delta, big, &out, &signed(b"x")).unwrap_err();
        assert!(err.contains("more than a zstd-patch delta may have"), "{err}");
        let err = apply(ALGORITHM_ZSTD_PATCH, &delta, Source { path: &source, length: 10 }, &out, &signed(b"x"));
        assert!(err.unwrap_err().contains("other than a zstd frame"));
        let short = Source { path: &source, length: ZSTD_PATCH_MAX_IMAGE };
        file.set_len(5).unwrap();
        let err = apply(ALGORITHM_ZSTD_PATCH, &delta, short, &out, &signed(b"x")).unwrap_err();
        assert!(err.contains("shorter than"), "{err}");
    }
}
