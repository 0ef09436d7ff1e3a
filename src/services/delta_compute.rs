//! Computing a delta with bounded memory (docs/design.md §1, "Delta targets"). The images are
//! read a window at a time (`domain::delta::windows`: 32 MiB of the new image against 64 MiB
//! of the source), so the server holds one window of each, bidiff's suffix array of the source
//! window and zstd's tables, whatever the image size; the three sections and the result go
//! through anonymous temporary files, which the system removes even after a crash. Only a
//! `zstd-patch` delta, made for images of at most 16 MiB, reads both images whole.
//!
//! One computation at a time per process: each keeps a core busy for seconds per megabyte.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::ops::Range;

use futures_util::StreamExt;
use patchgate_protocol::delta::{ALGORITHM_BSDIFF_ZSTD, ALGORITHM_ZSTD_PATCH, ZSTD_PATCH_MAX_IMAGE};

use crate::domain::delta::{
    CHUNK_BYTES, FullImageCounter, MARGIN_BYTES, Sections, assemble, encode_zstd_patch, windows,
};
use crate::storage::BlobStore;

/// A delta computed into a temporary file.
#[derive(Debug)]
pub struct Computed {
    /// The delta, read from its start.
    pub file: File,
    /// Its length in bytes.
    pub length: u64,
    /// `bsdiff-zstd` or `zstd-patch`: the smaller of the two.
    pub algorithm: &'static str,
    /// The new image compressed with zstd at `domain::delta::LEVEL`: what the delta must beat.
    pub full_compressed: u64,
}

/// Delta computations (and image measurements) running at once in this process.
static COMPUTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// [`compute`] over two stored blobs, each given as (sha256, length), read a window at a time
/// from `store`, on a blocking thread.
pub async fn compute_stored(store: &BlobStore, old: (String, u64), new: (String, u64)) -> anyhow::Result<Computed> {
    let _computing = COMPUTING.acquire().await?;
    let handle = tokio::runtime::Handle::current();
    let reader = |sha256: String| {
        let (store, handle) = (store.clone(), handle.clone());
        move |range: Range<u64>| handle.block_on(read_range(&store, &sha256, range))
    };
    let (old_len, new_len) = (old.1, new.1);
    let (old, new) = (reader(old.0), reader(new.0));
    Ok(tokio::task::spawn_blocking(move || compute(old_len, new_len, old, new)).await??)
}

/// The stored image `sha256` of `len` bytes compressed with zstd at `domain::delta::LEVEL` (what a
/// delta must beat), read a chunk at a time.
pub async fn compressed_len_stored(store: &BlobStore, sha256: &str, len: u64) -> anyhow::Result<u64> {
    let _computing = COMPUTING.acquire().await?;
    let mut counter = FullImageCounter::new(len)?;
    let mut at = 0;
    while at < len {
        let end = at.saturating_add(CHUNK_BYTES).min(len);
        let chunk = read_range(store, sha256, at..end).await?;
        counter = tokio::task::spawn_blocking(move || counter.write(&chunk).map(|()| counter)).await??;
        at = end;
    }
    Ok(tokio::task::spawn_blocking(move || counter.finish()).await??)
}

/// Bytes `range` of a stored blob, exactly.
async fn read_range(store: &BlobStore, sha256: &str, range: Range<u64>) -> io::Result<Vec<u8>> {
    let mut stream = store.read(sha256, Some(range.clone())).await.map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(io::Error::other)?);
    }
    if out.len() as u64 != range.end - range.start {
        return Err(io::Error::other(format!(
            "blob {sha256} gave {} bytes for bytes {}..{}",
            out.len(),
            range.start,
            range.end
        )));
    }
    Ok(out)
}

/// The smallest delta from a source of `old_len` bytes to a new image of `new_len` bytes, each
/// read through `read_*(range)` (which must return exactly the range's bytes), one window at a
/// time. The same bytes as `domain::delta::encode` makes from both images in memory. Blocking.
pub fn compute(
    old_len: u64,
    new_len: u64,
    mut read_old: impl FnMut(Range<u64>) -> io::Result<Vec<u8>>,
    mut read_new: impl FnMut(Range<u64>) -> io::Result<Vec<u8>>,
) -> io::Result<Computed> {
    let spill = || tempfile::tempfile().map(BufWriter::new);
    let mut sections = Sections::new(spill()?, spill()?, spill()?);
    let mut full = FullImageCounter::new(new_len)?;
    for w in windows(old_len, new_len, CHUNK_BYTES, MARGIN_BYTES) {
        let old = exactly(&mut read_old, w.old.clone(), "source")?;
        let new = exactly(&mut read_new, w.new.clone(), "new image")?;
        full.write(&new)?;
        sections.add_window(&old, w.old.start, &new)?;
    }
    let full_compressed = full.finish()?;
    let mut readers = Vec::with_capacity(3);
    let mut lens = [0; 3];
    for (i, section) in [sections.control, sections.diff, sections.extra].into_iter().enumerate() {
        let mut file = section.into_inner().map_err(io::IntoInnerError::into_error)?;
        lens[i] = file.stream_position()?;
        file.rewind()?;
        readers.push(BufReader::new(file));
    }
    let readers: [BufReader<File>; 3] =
        readers.try_into().map_err(|_| io::Error::other("three sections are always written"))?;
    let mut out = BufWriter::new(tempfile::tempfile()?);
    assemble(&mut out, readers, lens, |_| tempfile::tempfile())?;
    let best = rewound(out, ALGORITHM_BSDIFF_ZSTD, full_compressed)?;
    if old_len > ZSTD_PATCH_MAX_IMAGE || new_len > ZSTD_PATCH_MAX_IMAGE {
        return Ok(best);
    }
    let old = exactly(&mut read_old, 0..old_len, "source")?;
    let new = exactly(&mut read_new, 0..new_len, "new image")?;
    let patch = encode_zstd_patch(&old, &new)?;
    if patch.len() as u64 >= best.length {
        return Ok(best);
    }
    let mut out = BufWriter::new(tempfile::tempfile()?);
    out.write_all(&patch)?;
    rewound(out, ALGORITHM_ZSTD_PATCH, full_compressed)
}

/// `range` of an image, refused unless it is exactly that many bytes.
fn exactly(
    read: &mut impl FnMut(Range<u64>) -> io::Result<Vec<u8>>,
    range: Range<u64>,
    what: &str,
) -> io::Result<Vec<u8>> {
    let bytes = read(range.clone())?;
    if bytes.len() as u64 != range.end - range.start {
        return Err(io::Error::other(format!(
            "the {what} gave {} bytes for bytes {}..{}",
            bytes.len(),
            range.start,
            range.end
        )));
    }
    Ok(bytes)
}

fn rewound(out: BufWriter<File>, algorithm: &'static str, full_compressed: u64) -> io::Result<Computed> {
    let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    let length = file.stream_position()?;
    file.rewind()?;
    Ok(Computed { file, length, algorithm, full_compressed })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_streamed_delta_is_the_in_memory_one() {
        let old: Vec<u8> = (0..400_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let mut new = old.clone();
        new.splice(10_000..10_000, b"inserted".iter().copied());
        new[300_000] ^= 0x40;
        let slice = |image: &[u8]| {
            let image = image.to_vec();
            move |r: Range<u64>| Ok(image[r.start as usize..r.end as usize].to_vec())
        };
        let mut computed = compute(old.len() as u64, new.len() as u64, slice(&old), slice(&new)).unwrap();
        let mut bytes = Vec::new();
        computed.file.read_to_end(&mut bytes).unwrap();
        let in_memory = crate::domain::delta::encode(&old, &new).unwrap();
        assert_eq!((computed.algorithm, bytes.len() as u64), (in_memory.algorithm, computed.length));
        assert_eq!(bytes, in_memory.bytes);
        assert_eq!(computed.full_compressed, crate::domain::delta::compressed_len(&new).unwrap());
        // A reader that gives fewer bytes than asked is an error, never a shorter image.
        let short = |r: Range<u64>| Ok(vec![0; (r.end - r.start).saturating_sub(1) as usize]);
        assert!(compute(old.len() as u64, new.len() as u64, short, slice(&new)).is_err());
    }
}
