//! Looking up what the public repository routes serve.

use super::{ServiceError, Services};
use crate::db::metadata::{metadata_get, metadata_latest};
use crate::db::releases::release_find_by_target;
use crate::domain::metadata_file::MetadataFile;

pub use super::image_repo::{DIRECTOR, IMAGE};

/// The bytes and SHA-256 of metadata file `file` of `repo`, if it exists.
///
/// `timestamp.json` is the newest timestamp; `{N}.{role}.json` is version N exactly.
pub async fn find_metadata(
    svc: &Services,
    repo: &str,
    file: &str,
) -> Result<Option<(bytes::Bytes, String)>, ServiceError> {
    let repo: &'static str = if repo == IMAGE { IMAGE } else { DIRECTOR };
    if let Some(hit) = svc.caches.repo_file(repo, file) {
        return Ok(Some((hit.0.clone(), hit.1.clone())));
    }
    let ticket = svc.caches.repo_ticket();
    let row = match MetadataFile::parse(file) {
        Some(MetadataFile::Timestamp) => metadata_latest(&svc.db, repo, "timestamp").await?,
        Some(MetadataFile::Versioned { version, role }) => metadata_get(&svc.db, repo, role, version).await?,
        None => return Ok(None),
    };
    let Some(row) = row else { return Ok(None) };
    let body = bytes::Bytes::from(row.body);
    svc.caches.fill_repo_file(ticket, repo, file, std::sync::Arc::new((body.clone(), row.sha256.clone())));
    Ok(Some((body, row.sha256)))
}

/// Metadata files smaller than this are sent as they are: `timestamp.json` (about 500 bytes) is
/// fetched on every poll, and gzip would save a few hundred bytes for a deflate per file.
pub const GZIP_MIN_BYTES: usize = 1024;

/// The gzip encoding of the metadata file `body` whose SHA-256 is `sha256`: compressed once per
/// file and instance, then served from memory (a snapshot that lists a thousand products shrinks
/// to about a sixth, and every device fetches each new one).
pub fn gzipped_metadata(svc: &Services, sha256: &str, body: &[u8]) -> Result<bytes::Bytes, ServiceError> {
    use std::io::Write as _;
    if let Some(hit) = svc.caches.gzipped(sha256) {
        return Ok(hit);
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
    encoder.write_all(body).map_err(|e| ServiceError::Internal(anyhow::anyhow!("gzip: {e}")))?;
    let gzipped =
        bytes::Bytes::from(encoder.finish().map_err(|e| ServiceError::Internal(anyhow::anyhow!("gzip: {e}")))?);
    svc.caches.fill_gzipped(sha256, gzipped.clone());
    Ok(gzipped)
}

/// A published target, resolved from a request path.
#[derive(Debug, Clone)]
pub struct ResolvedTarget {
    /// SHA-256, the blob's address.
    pub sha256: String,
    /// Bytes.
    pub length: u64,
    /// Whether it is a delta target (for the bytes-served metric), not a release's image.
    pub delta: bool,
    /// The release whose image it is, or (a delta) produces.
    pub release_id: i64,
}

impl ResolvedTarget {
    /// `delta` or `image`, as metrics and rollout traffic name the kind.
    pub fn kind(&self) -> &'static str {
        if self.delta { "delta" } else { "image" }
    }
}

fn split_hash_prefix(segment: &str) -> Option<(&str, &str)> {
    let (hash, rest) = segment.split_once('.')?;
    let is_hash = (hash.len() == 64 || hash.len() == 128)
        && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_hash && !rest.is_empty()).then_some((hash, rest))
}

/// Resolves either consistent-snapshot spelling of a target path: the hash before the file
/// name (the TUF specification, python-tuf) or before the whole path (tough 0.24).
pub async fn resolve_target(svc: &Services, path: &str) -> Result<Option<ResolvedTarget>, ServiceError> {
    let mut candidates = Vec::with_capacity(2);
    if let Some((dir, last)) = path.rsplit_once('/')
        && let Some((hash, file)) = split_hash_prefix(last)
    {
        candidates.push((hash, format!("{dir}/{file}")));
    }
    if let Some((hash, rest)) = split_hash_prefix(path) {
        candidates.push((hash, rest.to_owned()));
    }
    for (hash, name) in candidates {
        if let Some(release) = release_find_by_target(&svc.db, &name).await?
            && (release.sha256 == hash || release.sha512 == hash)
        {
            return Ok(Some(ResolvedTarget {
                sha256: release.sha256,
                length: u64::try_from(release.length).unwrap_or(0),
                delta: false,
                release_id: release.id,
            }));
        }
        if name.contains(patchgate_protocol::delta::NAME_MARKER)
            && let Some(delta) = crate::db::deltas::delta_find_by_target(&svc.db, &name).await?
            && (delta.sha256 == hash || delta.sha512 == hash)
        {
            return Ok(Some(ResolvedTarget {
                sha256: delta.sha256,
                length: u64::try_from(delta.length).unwrap_or(0),
                delta: true,
                release_id: delta.to_release_id,
            }));
        }
    }
    Ok(None)
}

/// Counts `bytes` of `target`, asked for with device token `token`, toward the traffic of the
/// rollout that assigned the device this target's release (`rollout_traffic`, and
/// `patchgate_rollout_target_bytes_total` on this instance). The repository is public, so a
/// download with no valid token, or of a release the device is not assigned by a rollout, is
/// served all the same and counted nowhere but the global byte counter.
pub async fn attribute_download(svc: &Services, token: &str, target: &ResolvedTarget, bytes: u64) {
    let Ok(device) = super::enrollment::authenticate_device(svc, token).await else { return };
    let assigned = match crate::db::devices::device_get(&svc.db, device.id).await {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "attributing a download to its rollout");
            return;
        }
    };
    let Some(rollout) =
        assigned.assigned_rollout_id.filter(|_| assigned.assigned_release_id == Some(target.release_id))
    else {
        return;
    };
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    if let Err(e) = crate::db::rollouts::traffic_add(&svc.db, &rollout, target.kind(), bytes).await {
        tracing::warn!(error = %e, rollout = %rollout, "recording a rollout's download traffic");
    }
    metrics::counter!("patchgate_rollout_target_bytes_total", "rollout" => rollout, "kind" => target.kind())
        .increment(u64::try_from(bytes).unwrap_or(0));
}
