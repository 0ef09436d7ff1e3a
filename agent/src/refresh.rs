//! Refreshing one TUF repository: the load that devices run (for the image repository and the
//! director) and that the conformance client (`src/bin/tuf-conformance-client.rs`) runs for
//! the TUF community's client conformance suite.
//!
//! tough carries out TUF 1.0's client workflow (§5: the root chain, timestamp, snapshot,
//! targets and the delegated roles, with signature thresholds, versions, hashes, lengths and
//! expiry) from the [`Datastore`]'s newest verified root. Around it, ours: the copies in
//! `kept/` are put back before (tough writes without fsync) and taken after.

use url::Url;

use crate::error::{AgentError, from_tough};
use crate::net::TufTransport;
use crate::state::Datastore;

/// Refreshes the repository whose metadata is at `metadata_url` into `store`; `label` names it
/// in errors (`image`, `director`).
pub async fn refresh(
    store: &Datastore,
    label: &str,
    metadata_url: Url,
    targets_url: Url,
    transport: TufTransport,
) -> Result<tough::Repository, AgentError> {
    store.restore_kept()?;
    let root = store.trusted_root()?;
    let loaded = tough::RepositoryLoader::new(&root, metadata_url, targets_url)
        .transport(transport)
        .datastore(store.path())
        .load()
        .await
        .map_err(|e| from_tough(label, e))?;
    store.keep_verified()?;
    Ok(loaded)
}
