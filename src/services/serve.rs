//! Looking up what the public repository routes serve.

use super::{ServiceError, Services};
use crate::db::metadata::{metadata_get, metadata_latest};
use crate::db::releases::release_find_by_target;

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
    let row = if file == "timestamp.json" {
        metadata_latest(&svc.db, repo, "timestamp").await?
    } else {
        let Some(stem) = file.strip_suffix(".json") else { return Ok(None) };
        let Some((raw_version, role)) = stem.split_once('.') else { return Ok(None) };
        let Ok(version) = raw_version.parse::<i64>() else { return Ok(None) };
        // Only the canonical spelling: `01.root.json` or `+1.root.json` must not be a second,
        // immutably cached name for the same file.
        if version.to_string() != raw_version {
            return Ok(None);
        }
        // The timestamp is only ever served unversioned (TUF 5.4).
        if version < 1 || role.is_empty() || role == "timestamp" {
            return Ok(None);
        }
        metadata_get(&svc.db, repo, role, version).await?
    };
    let Some(row) = row else { return Ok(None) };
    let body = bytes::Bytes::from(row.body);
    svc.caches.fill_repo_file(ticket, repo, file, std::sync::Arc::new((body.clone(), row.sha256.clone())));
    Ok(Some((body, row.sha256)))
}

/// A published target, resolved from a request path.
#[derive(Debug, Clone)]
pub struct ResolvedTarget {
    /// SHA-256, the blob's address.
    pub sha256: String,
    /// Bytes.
    pub length: u64,
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
            }));
        }
    }
    Ok(None)
}
