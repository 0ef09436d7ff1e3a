//! Fetching metadata files through the [`TufTransport`] with a size cap, and checking them
//! against the length and hashes the referencing metadata lists.

use futures_util::StreamExt;
use sha2::{Digest, Sha256, Sha512};
use tough::schema::Metafile;
use tough::{Transport, TransportErrorKind};

use super::Source;
use crate::error::AgentError;

impl Source {
    /// `name` under the metadata URL, or `None` when the server says it does not exist (404, or
    /// 403 without a token). More than `cap` bytes is refused: an endless answer is an attack.
    pub(super) async fn fetch(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>, AgentError> {
        let url = self
            .metadata_url
            .join(name)
            .map_err(|e| AgentError::Usage(format!("{} repository: {name}: {e}", self.label)))?;
        let network = |e: &dyn std::fmt::Display| AgentError::Network(format!("{} repository: {url}: {e}", self.label));
        let mut stream = match self.transport.fetch(url.clone()).await {
            Ok(stream) => stream,
            Err(e) if e.kind() == TransportErrorKind::FileNotFound => return Ok(None),
            Err(e) => return Err(network(&chain(&e))),
        };
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| network(&chain(&e)))?;
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(self.refused("endless_data", name, format!("the server sent more than {cap} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }

    /// `name`, which referencing metadata lists as `meta`: capped at its length when given.
    pub(super) async fn fetch_listed(&self, name: &str, meta: &Metafile, cap: u64) -> Result<Vec<u8>, AgentError> {
        self.fetch(name, meta.length.unwrap_or(cap))
            .await?
            .ok_or_else(|| AgentError::Network(format!("{} repository: {name} is not on the server", self.label)))
    }

    /// Checks `bytes` against the length and hashes `meta` lists (each only where given).
    pub(super) fn check_listed(&self, role: &str, meta: &Metafile, bytes: &[u8]) -> Result<(), AgentError> {
        if let Some(length) = meta.length
            && bytes.len() as u64 != length
        {
            return Err(self.mismatch(role, format!("{} bytes, not the {length} listed", bytes.len())));
        }
        let Some(hashes) = &meta.hashes else { return Ok(()) };
        if Sha256::digest(bytes).as_slice() != AsRef::<[u8]>::as_ref(&hashes.sha256) {
            return Err(self.mismatch(role, "its sha256 is not the one listed"));
        }
        if let Some(listed) = hashes._extra.get("sha512")
            && listed.as_str() != Some(hex::encode(Sha512::digest(bytes)).as_str())
        {
            return Err(self.mismatch(role, "its sha512 is not the one listed"));
        }
        Ok(())
    }
}

/// An error with its causes, for a network message that says what failed.
fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        message.push_str(": ");
        message.push_str(&e.to_string());
        cause = e.source();
    }
    message
}
