//! Downloading a verified target: Range-resumable (within a run and across restarts), streamed
//! into `staging/<sha256>.part`, never more than the signed length, and checked against the
//! signed sha256 and sha512 before anyone may use it.
//!
//! tough's `read_target` hashes only at the end of the stream, checks only sha256 and cannot
//! resume after a restart, hence this module. Must not touch the install slot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use crate::error::AgentError;
use crate::verify::Assigned;

/// What the signed metadata says of one target file: all a download checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFile {
    /// TUF target name, e.g. `pump-x1/1.1.0/fw.bin`.
    pub name: String,
    /// Exact length in bytes.
    pub length: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// SHA-512, lowercase hex, where the metadata lists it.
    pub sha512: Option<String>,
}

impl SignedFile {
    /// What `target`, listed under `name` in verified metadata, says of its file.
    pub fn of_target(name: &str, target: &tough::schema::Target) -> Self {
        Self {
            name: name.to_owned(),
            length: target.length,
            sha256: hex::encode(&target.hashes.sha256),
            sha512: target.hashes._extra.get("sha512").and_then(serde_json::Value::as_str).map(str::to_owned),
        }
    }
}

impl From<&Assigned> for SignedFile {
    fn from(a: &Assigned) -> Self {
        Self { name: a.name.clone(), length: a.length, sha256: a.sha256.clone(), sha512: a.sha512.clone() }
    }
}

/// How hard to retry.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts after the first.
    pub retries: u32,
    /// The first wait; it doubles after each failure.
    pub backoff: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
}

impl Retry {
    /// The wait before retry number `n` (0-based).
    pub fn delay(&self, n: u32) -> Duration {
        self.backoff.saturating_mul(2u32.saturating_pow(n.min(16))).min(self.backoff_max)
    }
}

/// Where the consistent-snapshot copy of `target` lives under the image repository's targets
/// URL: the TUF spelling, hash prefixed to the file name (`pump-x1/1.1.0/<sha256>.fw.bin`).
pub fn target_url(targets_base: &Url, target: &SignedFile) -> Result<Url, AgentError> {
    let (dir, file) = target.name.rsplit_once('/').unwrap_or(("", &target.name));
    let path =
        if dir.is_empty() { format!("{}.{file}", target.sha256) } else { format!("{dir}/{}.{file}", target.sha256) };
    targets_base.join(&path).map_err(|e| AgentError::Usage(format!("{path}: {e}")))
}

/// Where and how to fetch a target: its URL, and the device token to send with it (the server
/// counts the bytes toward the device's rollout; never sent on to a redirect's host).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The target's URL.
    pub url: &'a Url,
    /// `Authorization: Bearer` for the first request, if any.
    pub token: Option<&'a str>,
}

/// Downloads `target` from `from` into `staging`, resuming a partial file, and verifies it.
/// Returns the path of the verified file.
pub async fn fetch_verified(
    client: &reqwest::Client,
    from: Source<'_>,
    target: &SignedFile,
    staging: &Path,
    retry: Retry,
) -> Result<PathBuf, AgentError> {
    let path = staging.join(format!("{}.part", target.sha256));
    let resumed = file_len(&path).await > 0;
    fetch_all(client, from, target, &path, retry).await?;
    match verify_file(&path, target).await {
        Ok(()) => Ok(path),
        // A partial file from before a crash may hold bytes that never reached the disk intact:
        // start once more from zero before calling it an attack.
        Err(AgentError::Refused(_)) if resumed => {
            remove(&path).await?;
            fetch_all(client, from, target, &path, retry).await?;
            verify_file(&path, target).await.map(|()| path.clone()).inspect_err(|_| drop(std::fs::remove_file(&path)))
        }
        Err(e) => {
            remove(&path).await?;
            Err(e)
        }
    }
}

/// The length of the file at `path`, 0 if there is none.
pub(crate) async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0)
}

async fn remove(path: &Path) -> Result<(), AgentError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::local(format!("removing {}", path.display()), e)),
    }
}

/// Gets the file to exactly `target.length` bytes, retrying network failures with backoff.
async fn fetch_all(
    client: &reqwest::Client,
    from: Source<'_>,
    target: &SignedFile,
    path: &Path,
    retry: Retry,
) -> Result<(), AgentError> {
    let mut failures = 0;
    loop {
        match fetch_once(client, from, target, path).await {
            Ok(()) => return Ok(()),
            // What arrived so far stays in the staging file: the next attempt resumes from it.
            Err(AgentError::Network(_)) if failures < retry.retries => {
                tokio::time::sleep(retry.delay(failures)).await;
                failures += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn fetch_once(
    client: &reqwest::Client,
    from: Source<'_>,
    target: &SignedFile,
    path: &Path,
) -> Result<(), AgentError> {
    let url = from.url;
    let mut have = file_len(path).await;
    if have > target.length {
        remove(path).await?;
        have = 0;
    }
    if have == target.length {
        return Ok(());
    }
    let net = |e: reqwest::Error| AgentError::Network(format!("{url}: {e}"));
    // Firmware is fetched as it is stored: asking a proxy or CDN for gzip would only spend the
    // device's CPU (the bytes are checked against the signed hashes either way).
    let mut request = client.get(url.clone()).header(reqwest::header::ACCEPT_ENCODING, "identity");
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    if let Some(token) = from.token {
        request = request.bearer_auth(token);
    }
    let mut res = request.send().await.map_err(net)?;
    if matches!(res.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        // The server may hand the download to its object store (a presigned URL): followed
        // once, with the same headers but the token; the bytes are checked against the signed
        // hashes anyway.
        let location = res.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
        let to = redirect_target(url, res.status(), location)?;
        let mut again = client.get(to.clone()).header(reqwest::header::ACCEPT_ENCODING, "identity");
        if have > 0 {
            again = again.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        res = again.send().await.map_err(|e| AgentError::Network(format!("{to} (redirected from {url}): {e}")))?;
    }
    let status = res.status();
    // What the server says the whole file is must be what was signed: more is an endless-data
    // attack, less can never verify (refused at once instead of downloaded again forever).
    let announced = match status.as_u16() {
        200 => res.content_length(),
        206 | 416 => content_range_total(&res),
        _ => None,
    };
    if let Some(total) = announced.filter(|t| *t != target.length) {
        remove(path).await?;
        let (code, what) =
            if total > target.length { ("endless_data", "more") } else { ("target_length_mismatch", "less") };
        return Err(AgentError::refused(
            code,
            format!("{}: the server offers {total} bytes, {what} than the signed {}", target.name, target.length),
        ));
    }
    let start = match status.as_u16() {
        206 if content_range_start(&res) == Some(have) => have,
        200 => 0,
        416 => {
            // The server has nothing past what we hold: start again from zero.
            remove(path).await?;
            return Err(AgentError::Network(format!("{url}: 416 resuming at byte {have}")));
        }
        _ => return Err(AgentError::Network(format!("{url}: HTTP {status}"))),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(start == 0)
        .append(start > 0)
        .open(path)
        .await
        .map_err(|e| AgentError::local(format!("opening {}", path.display()), e))?;
    let mut written = start;
    let mut stream = res.bytes_stream();
    let outcome = loop {
        let Some(chunk) = stream.next().await else { break Ok(()) };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => break Err(net(e)),
        };
        let len = chunk.len() as u64;
        if written + len > target.length {
            drop(file);
            remove(path).await?;
            return Err(AgentError::refused(
                "endless_data",
                format!("{}: the server sent more than the signed {} bytes", target.name, target.length),
            ));
        }
        if let Err(e) = file.write_all(&chunk).await {
            break Err(AgentError::local(format!("writing {}", path.display()), e));
        }
        written += len;
    };
    // Keep what arrived, durably, so the next attempt (or the next run) resumes from it.
    file.flush().await.map_err(|e| AgentError::local(format!("writing {}", path.display()), e))?;
    file.sync_data().await.map_err(|e| AgentError::local(format!("syncing {}", path.display()), e))?;
    outcome?;
    if written < target.length {
        return Err(AgentError::Network(format!("{url}: the stream ended at byte {written} of {}", target.length)));
    }
    Ok(())
}

/// Where a target download answered with `status` and `location` is redirected to: HTTPS, or
/// plain HTTP only when the server itself was reached over plain HTTP on loopback and the
/// redirect stays there (a development setup). A redirect may not take a download off HTTPS.
fn redirect_target(from: &Url, status: reqwest::StatusCode, location: Option<&str>) -> Result<Url, AgentError> {
    let location = location.ok_or_else(|| AgentError::Network(format!("{from}: HTTP {status} without a Location")))?;
    let to = from.join(location).map_err(|e| AgentError::Network(format!("{from}: redirect to {location:?}: {e}")))?;
    let allowed = match to.scheme() {
        "https" => true,
        "http" => from.scheme() == "http" && crate::net::is_loopback(from) && crate::net::is_loopback(&to),
        _ => false,
    };
    if !allowed {
        return Err(AgentError::Network(format!(
            "{from}: redirected to {to}, which is not HTTPS (plain HTTP only from and to loopback)"
        )));
    }
    Ok(to)
}

/// The total in `Content-Range: bytes a-b/total` or `bytes */total`.
fn content_range_total(res: &reqwest::Response) -> Option<u64> {
    let value = res.headers().get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    value.rsplit_once('/')?.1.trim().parse().ok()
}

fn content_range_start(res: &reqwest::Response) -> Option<u64> {
    let value = res.headers().get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.parse().ok()
}

/// Checks the file's length, sha256 and (where published) sha512 against the signed values.
pub async fn verify_file(path: &Path, target: &SignedFile) -> Result<(), AgentError> {
    let local = |e: std::io::Error| AgentError::local(format!("reading {}", path.display()), e);
    let mut file = tokio::fs::File::open(path).await.map_err(local)?;
    let mut sha256 = Sha256::new();
    let mut sha512 = Sha512::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(local)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        sha256.update(chunk);
        if target.sha512.is_some() {
            sha512.update(chunk);
        }
        total += n as u64;
    }
    let mismatch = |what: &str| {
        AgentError::refused(
            "target_hash_mismatch",
            format!("{}: the downloaded {what} does not match the signed one", target.name),
        )
    };
    if total != target.length {
        return Err(mismatch("length"));
    }
    if hex::encode(sha256.finalize()) != target.sha256 {
        return Err(mismatch("sha256"));
    }
    if let Some(expected) = &target.sha512
        && hex::encode(sha512.finalize()) != *expected
    {
        return Err(mismatch("sha512"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn assigned(bytes: &[u8]) -> SignedFile {
        SignedFile {
            name: "pump-x1/1.1.0/fw.bin".into(),
            length: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            sha512: Some(hex::encode(Sha512::digest(bytes))),
        }
    }

    #[test]
    fn the_url_puts_the_hash_on_the_file_name() {
        let base = Url::parse("http://127.0.0.1:1/repo/targets/").unwrap();
        let t = assigned(b"x");
        assert_eq!(
            target_url(&base, &t).unwrap().as_str(),
            format!("http://127.0.0.1:1/repo/targets/pump-x1/1.1.0/{}.fw.bin", t.sha256)
        );
    }

    #[tokio::test]
    async fn verify_file_checks_length_and_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"firmware").unwrap();
        verify_file(&path, &assigned(b"firmware")).await.unwrap();
        let mut wrong512 = assigned(b"firmware");
        wrong512.sha512 = Some("00".repeat(64));
        assert_eq!(verify_file(&path, &wrong512).await.unwrap_err().refusal().unwrap().code, "target_hash_mismatch");
        std::fs::write(&path, b"firmwarE").unwrap();
        assert!(verify_file(&path, &assigned(b"firmware")).await.is_err());
    }

    #[test]
    fn a_download_follows_a_redirect_only_to_https_or_within_loopback() {
        let moved = reqwest::StatusCode::TEMPORARY_REDIRECT;
        let to = |from: &str, location: Option<&str>| {
            redirect_target(&Url::parse(from).unwrap(), moved, location)
                .map(|u| u.to_string())
                .map_err(|e| e.to_string())
        };
        let https = "https://bucket.s3.amazonaws.com/blobs/sha256/ab?X-Amz-Signature=1";
        assert_eq!(to("https://updates.example/t/a.bin", Some(https)).unwrap(), https);
        assert_eq!(to("http://127.0.0.1:8080/t/a.bin", Some(https)).unwrap(), https);
        assert_eq!(
            to("http://127.0.0.1:8080/t/a.bin", Some("http://127.0.0.1:9000/b")).unwrap(),
            "http://127.0.0.1:9000/b"
        );
        assert_eq!(
            to("https://updates.example/t/a.bin", Some("/elsewhere")).unwrap(),
            "https://updates.example/elsewhere"
        );
        // Off HTTPS, out of loopback, or nowhere: refused.
        for (from, location) in [
            ("https://updates.example/t/a.bin", Some("http://updates.example/a.bin")),
            ("https://updates.example/t/a.bin", Some("http://127.0.0.1:9000/a.bin")),
            ("http://127.0.0.1:8080/t/a.bin", Some("http://s3.example/a.bin")),
            ("http://127.0.0.1:8080/t/a.bin", Some("ftp://127.0.0.1/a.bin")),
            ("https://updates.example/t/a.bin", None),
        ] {
            assert!(to(from, location).is_err(), "{from} -> {location:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let r = Retry { retries: 5, backoff: Duration::from_millis(100), backoff_max: Duration::from_millis(500) };
        let delays: Vec<u128> = (0..5).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }
}
