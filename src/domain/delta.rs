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
use std::ops::Range;

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

/// Bytes of the new image matched at once when computing a `bsdiff-zstd` delta: with
/// [`MARGIN_BYTES`], what bounds the memory of a computation whatever the image size.
pub const CHUNK_BYTES: u64 = 32 << 20;

/// Source bytes on either side of a chunk's place in the source that its matches may come from:
/// a release moves code by far less between versions.
pub const MARGIN_BYTES: u64 = 16 << 20;

/// One step of a `bsdiff-zstd` computation: a chunk of the new image, and the source bytes its
/// matches may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The chunk of the new image.
    pub new: Range<u64>,
    /// The source bytes it is matched against.
    pub old: Range<u64>,
}

/// The windows that cover a new image of `new_len` bytes against a source of `old_len` bytes,
/// `chunk` bytes of new image each, matched against the source around the chunk's proportional
/// place, `margin` bytes on either side. Images within one window (the new one at most `chunk`,
/// the source at most `chunk + 2 × margin`) are one window over both: the delta is then exactly
/// the one matching whole images makes.
pub fn windows(old_len: u64, new_len: u64, chunk: u64, margin: u64) -> Vec<Window> {
    let span = chunk.saturating_add(margin.saturating_mul(2));
    if new_len <= chunk && old_len <= span {
        return vec![Window { new: 0..new_len, old: 0..old_len }];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < new_len {
        let end = start.saturating_add(chunk.max(1)).min(new_len);
        let at = u64::try_from(u128::from(start) * u128::from(old_len) / u128::from(new_len)).unwrap_or(old_len);
        let len = (end - start).saturating_add(margin.saturating_mul(2)).min(old_len);
        let old_start = at.saturating_sub(margin).min(old_len - len);
        out.push(Window { new: start..end, old: old_start..old_start + len });
        start = end;
    }
    out
}

/// The three uncompressed sections of a `bsdiff-zstd` delta (controls, byte-wise differences, new
/// bytes), appended to window by window.
#[derive(Debug)]
pub struct Sections<W> {
    /// Control records: varints add, copy, zigzag seek.
    pub control: W,
    /// Differences to the source, byte by byte.
    pub diff: W,
    /// Bytes taken as they are.
    pub extra: W,
    /// Where in the source the records written so far leave the device.
    pos: u64,
}

impl<W: Write> Sections<W> {
    /// Empty sections over three writers.
    pub fn new(control: W, diff: W, extra: W) -> Self {
        Self { control, diff, extra, pos: 0 }
    }

    /// Appends the records that build `new_chunk` (the next bytes of the new image) from
    /// `old_window`, the source's bytes from offset `old_start`. bidiff's matching starts at the
    /// window's first byte, so a record that only seeks there comes first when needed.
    pub fn add_window(&mut self, old_window: &[u8], old_start: u64, new_chunk: &[u8]) -> io::Result<()> {
        let signed = |n: u64| i64::try_from(n).map_err(io::Error::other);
        if self.pos != old_start {
            write_record(&mut self.control, 0, 0, signed(old_start)? - signed(self.pos)?)?;
            self.pos = old_start;
        }
        let (control, diff, extra, pos) = (&mut self.control, &mut self.diff, &mut self.extra, &mut self.pos);
        let mut translator = bidiff::Translator::new(old_window, new_chunk, |c: &bidiff::Control| -> io::Result<()> {
            write_record(control, c.add.len() as u64, c.copy.len() as u64, c.seek)?;
            diff.write_all(c.add)?;
            extra.write_all(c.copy)?;
            let to = signed(*pos)? + signed(c.add.len() as u64)? + c.seek;
            *pos = u64::try_from(to).map_err(|_| io::Error::other("a record seeks before the source"))?;
            Ok(())
        });
        bidiff::diff(old_window, new_chunk, &bidiff::DiffParams::default(), |m| translator.translate(m))?;
        translator.close()
    }
}

fn write_record(control: &mut impl Write, add: u64, copy: u64, seek: i64) -> io::Result<()> {
    write_varint(control, add)?;
    write_varint(control, copy)?;
    write_varint(control, zigzag(seek))
}

/// The `bsdiff-zstd` delta from `old` to `new`, both in memory (tests, benchmarks, the CLI for a
/// manufacturer's delta); the server streams them instead (`services::delta_compute`). Same
/// windows, same bytes.
pub fn encode_bsdiff_zstd(old: &[u8], new: &[u8]) -> io::Result<Vec<u8>> {
    encode_windowed(old, new, CHUNK_BYTES, MARGIN_BYTES)
}

/// [`encode_bsdiff_zstd`] with windows of `chunk` and `margin` bytes (tests use small ones).
fn encode_windowed(old: &[u8], new: &[u8], chunk: u64, margin: u64) -> io::Result<Vec<u8>> {
    let mut sections = Sections::new(Vec::new(), Vec::new(), Vec::new());
    for w in windows(old.len() as u64, new.len() as u64, chunk, margin) {
        let range = |r: &Range<u64>| usize::try_from(r.start).unwrap_or(0)..usize::try_from(r.end).unwrap_or(0);
        sections.add_window(&old[range(&w.old)], w.old.start, &new[range(&w.new)])?;
    }
    let mut out = Vec::new();
    let lens = [&sections.control, &sections.diff, &sections.extra].map(|s| s.len() as u64);
    let sections = [&sections.control[..], &sections.diff[..], &sections.extra[..]];
    assemble(&mut out, sections, lens, |_| Ok(io::Cursor::new(Vec::new())))?;
    Ok(out)
}

/// Writes a `bsdiff-zstd` delta to `out`: the header, then each section compressed
/// (`sections[i]` holding `lens[i]` bytes). Each is compressed into a buffer from `scratch`
/// first, since the header gives the compressed lengths of the first two.
pub fn assemble<R: io::Read, B: Write + io::Read + io::Seek>(
    out: &mut impl Write,
    sections: [R; 3],
    lens: [u64; 3],
    mut scratch: impl FnMut(usize) -> io::Result<B>,
) -> io::Result<()> {
    let mut compressed = Vec::with_capacity(3);
    for (i, (section, len)) in sections.into_iter().zip(lens).enumerate() {
        let (buffer, written) = compress(section, len, scratch(i)?)?;
        compressed.push((buffer, written));
    }
    out.write_all(BSDIFF_ZSTD_MAGIC)?;
    out.write_all(&compressed[0].1.to_le_bytes())?;
    out.write_all(&compressed[1].1.to_le_bytes())?;
    for (mut buffer, written) in compressed {
        buffer.seek(io::SeekFrom::Start(0))?;
        let copied = io::copy(&mut io::Read::take(&mut buffer, written), out)?;
        if copied != written {
            return Err(io::Error::other("a compressed section was cut short"));
        }
    }
    Ok(())
}

/// One section of a `bsdiff-zstd` delta: one zstd frame at [`SECTION_LEVEL`], its window at most
/// the device's limit, its size pledged (zstd sizes its match tables by the input, where a stream
/// of unknown size at level 22 would take about 640 MiB of tables per encoder). Returns `into`
/// and how many bytes were written to it.
fn compress<B: Write>(mut section: impl io::Read, len: u64, into: B) -> io::Result<(B, u64)> {
    let mut encoder = zstd_writer(Counted(into, 0), SECTION_LEVEL, MAX_WINDOW_LOG)?;
    encoder.set_pledged_src_size(Some(len))?;
    let read = io::copy(&mut io::Read::take(&mut section, len), &mut encoder)?;
    if read != len {
        return Err(io::Error::other(format!("a section holds {read} bytes, not {len}")));
    }
    let Counted(into, written) = encoder.finish()?;
    Ok((into, written))
}

/// A writer that counts what passes through it.
pub struct Counted<W>(W, u64);

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
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
    let mut counter = FullImageCounter::new(data.len() as u64)?;
    counter.write(data)?;
    counter.finish()
}

/// Measures the compressed full image of a known length, written to it in pieces: the length
/// [`compressed_len`] gives, with no more than zstd's tables in memory.
pub struct FullImageCounter(zstd::stream::write::Encoder<'static, Counted<io::Sink>>);

impl FullImageCounter {
    /// A counter for an image of `len` bytes.
    pub fn new(len: u64) -> io::Result<Self> {
        let mut encoder = zstd_writer(Counted(io::sink(), 0), LEVEL, MAX_WINDOW_LOG + 1)?;
        encoder.set_pledged_src_size(Some(len))?;
        Ok(Self(encoder))
    }

    /// The image's next bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    /// The compressed length of all that was written.
    pub fn finish(self) -> io::Result<u64> {
        Ok(self.0.finish()?.1)
    }
}

fn zstd_writer<W: Write>(w: W, level: i32, window_log: u32) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(w, level)?;
    // The device refuses larger windows; long-distance matching finds repeats across it.
    encoder.window_log(window_log)?;
    encoder.long_distance_matching(true)?;
    encoder.include_checksum(true)?;
    Ok(encoder)
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

    #[test]
    fn windows_cover_the_new_image_and_stay_within_the_source() {
        assert_eq!(windows(10, 20, 32, 16), [Window { new: 0..20, old: 0..10 }], "small images: one window over both");
        let ws = windows(1_000, 1_000, 100, 50);
        assert_eq!(ws.len(), 10);
        assert_eq!(ws[0], Window { new: 0..100, old: 0..200 });
        assert_eq!(ws[5], Window { new: 500..600, old: 450..650 });
        assert_eq!(ws[9], Window { new: 900..1000, old: 800..1000 });
        // A grown image: windows follow the chunk's proportional place; a source shorter than
        // one window is matched whole each time.
        let ws = windows(500, 1_000, 100, 50);
        assert!(ws.windows(2).all(|w| w[0].new.end == w[1].new.start) && ws.last().unwrap().new.end == 1_000);
        assert!(ws.iter().all(|w| w.old.end <= 500 && w.old.end - w.old.start == 200));
        assert_eq!(windows(150, 1_000, 100, 50)[3].old, 0..150);
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
        // Small windows: what the server does for images above CHUNK_BYTES.
        let windowed = encode_windowed(&old, &new, 16 * 1024, 8 * 1024).unwrap();
        assert!(windowed.len() < 4_000, "matched window by window, still small: {}", windowed.len());
        for (algorithm, bytes) in [
            (ALGORITHM_BSDIFF_ZSTD, encode_bsdiff_zstd(&old, &new).unwrap()),
            (ALGORITHM_BSDIFF_ZSTD, windowed),
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
