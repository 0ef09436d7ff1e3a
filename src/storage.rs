//! Blob storage through object_store: local directory by default, S3 in production.
//!
//! Owns the object key layout. Firmware is content-addressed (`blobs/sha256/<hex>`), so a blob
//! is immutable once written and the same file published twice is stored once. Uploads stream
//! into `staging/<random>` and are renamed into place only after they are complete and hashed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart};

/// Concurrent part uploads per blob: bounds memory to this many 5 MiB parts (S3 part size).
const UPLOAD_CONCURRENCY: usize = 4;

/// The content-addressed blob store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The directory of a local store (its unfinished multipart files are not listable).
    local_dir: Option<std::path::PathBuf>,
    /// The `store_url` of a remote store, for messages.
    url: Option<String>,
    /// What signs URLs that fetch a blob without credentials (S3 only).
    signer: Option<Arc<dyn Signer>>,
}

/// How long [`BlobStore::check`] waits for a remote store (object_store itself retries for
/// up to three minutes).
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Where a blob is, by its SHA-256.
pub fn blob_key(sha256_hex: &str) -> String {
    format!("blobs/sha256/{sha256_hex}")
}

impl BlobStore {
    /// Opens `url` (`file:///…` or `s3://bucket/prefix`), or `default_dir` when `url` is `None`.
    /// An S3 store takes its settings from the `AWS_*` variables, then from `options`
    /// (object_store's names, `aws_endpoint`…), which win. Nothing is asked of the store here:
    /// [`BlobStore::check`] does that.
    pub fn open(url: Option<&str>, options: &BTreeMap<String, String>, default_dir: &FsPath) -> anyhow::Result<Self> {
        match url {
            None => Self::local(default_dir),
            Some(raw) => {
                let parsed = url::Url::parse(raw).with_context(|| format!("store_url {raw:?} is not a URL"))?;
                if parsed.scheme() == "file" {
                    let dir =
                        parsed.to_file_path().map_err(|()| anyhow::anyhow!("store_url {raw:?} is not a local path"))?;
                    return Self::local(&dir);
                }
                let (scheme, key_prefix) = object_store::ObjectStoreScheme::parse(&parsed)
                    .with_context(|| format!("store_url {raw:?} is not a store URL"))?;
                if scheme != object_store::ObjectStoreScheme::AmazonS3 {
                    anyhow::bail!("store_url {raw:?}: only file:// and s3:// stores are supported");
                }
                let prefix =
                    Path::parse(key_prefix).with_context(|| format!("store_url {raw:?}: the prefix is not a path"))?;
                // As object_store's `parse_url_opts`, keeping the concrete store: it also signs URLs.
                let env = std::env::vars().filter(|(k, _)| k.starts_with("AWS_"));
                let settings = env.chain(options.iter().map(|(k, v)| (k.clone(), v.clone())));
                let builder = settings.fold(AmazonS3Builder::new().with_url(raw), |builder, (key, value)| {
                    match key.to_ascii_lowercase().parse() {
                        Ok(key) => builder.with_config(key, value),
                        Err(_) => builder,
                    }
                });
                let s3 = Arc::new(builder.build().with_context(|| format!("opening object store {raw}"))?);
                Ok(Self { store: s3.clone(), prefix, local_dir: None, url: Some(raw.to_owned()), signer: Some(s3) })
            }
        }
    }

    /// Asks a remote store for the list of its top level, so that a bucket that does not exist,
    /// credentials it refuses or an endpoint that does not answer stop start-up with a message
    /// that says so, not the first publish or download. A local store needs nothing.
    pub async fn check(&self) -> anyhow::Result<()> {
        let Some(url) = &self.url else { return Ok(()) };
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listed = tokio::time::timeout(CHECK_TIMEOUT, self.store.list_with_delimiter(prefix)).await;
        let hint = match listed {
            Ok(Ok(_)) => return Ok(()),
            Err(_) => format!(
                "no answer within {} s: check aws_endpoint (store_options or AWS_ENDPOINT) and the network",
                CHECK_TIMEOUT.as_secs()
            ),
            Ok(Err(e)) => match refusal_of(&e) {
                Some(Refusal::NoBucket) => format!("the bucket does not exist; create it first ({e})"),
                Some(Refusal::Denied) => format!(
                    "access denied: check the credentials (aws_access_key_id and aws_secret_access_key in \
                     store_options, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) and that they may list, read, \
                     write and delete in the bucket ({e})"
                ),
                None => e.to_string(),
            },
        };
        anyhow::bail!("the object store {url} cannot be used: {hint}")
    }

    fn local(dir: &FsPath) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating object directory {}", dir.display()))?;
        // fsync: a release is committed in the database only after its blob is stored; without
        // it a power loss could leave a signed target whose file is empty (S3 is durable already).
        let store = LocalFileSystem::new_with_prefix(dir)
            .with_context(|| format!("opening object directory {}", dir.display()))?
            .with_fsync(true);
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            local_dir: Some(dir.to_owned()),
            url: None,
            signer: None,
        })
    }

    /// Removes staging objects older than `max_age`: uploads cut off by a crash (a client that
    /// disconnects is cleaned up at once). The age bound spares uploads in progress on other
    /// instances. On S3, unfinished multipart parts also need the bucket's lifecycle rule
    /// (`AbortIncompleteMultipartUpload`).
    pub async fn cleanup_staging(&self, max_age: std::time::Duration) -> anyhow::Result<usize> {
        use futures_util::TryStreamExt;
        let mut removed = 0;
        if let Some(dir) = &self.local_dir {
            let staging = dir.join("staging");
            let Ok(entries) = std::fs::read_dir(&staging) else { return Ok(0) };
            for entry in entries.filter_map(Result::ok) {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > max_age);
                if old && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
            return Ok(removed);
        }
        let cutoff = staging_cutoff_secs(max_age);
        let listed: Vec<_> =
            self.store.list(Some(&self.path("staging"))).try_collect().await.context("listing staging")?;
        for meta in listed {
            if meta.last_modified.timestamp() < cutoff {
                self.store.delete(&meta.location).await.context("removing a staging object")?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn path(&self, key: &str) -> Path {
        self.prefix.parts().chain(Path::from(key).parts()).collect()
    }

    /// Starts a streamed upload into a fresh staging object.
    pub async fn begin_upload(&self) -> anyhow::Result<StagedUpload> {
        let staging = self.path(&format!("staging/{}", random_hex(16)));
        let upload = self.store.put_multipart(&staging).await.context("starting a blob upload")?;
        Ok(StagedUpload { store: self.clone(), staging, writer: WriteMultipart::new(upload) })
    }

    /// Every stored blob: its SHA-256 and when it was last written (Unix seconds).
    pub async fn list_blobs(&self) -> anyhow::Result<Vec<(String, i64)>> {
        use futures_util::TryStreamExt;
        let listed: Vec<_> =
            self.store.list(Some(&self.path("blobs/sha256"))).try_collect().await.context("listing blobs")?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let sha256 = meta.location.filename()?.to_owned();
                (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| (sha256, meta.last_modified.timestamp()))
            })
            .collect())
    }

    /// When the blob with this SHA-256 was last written (Unix seconds), if it exists.
    pub async fn blob_written_at(&self, sha256_hex: &str) -> anyhow::Result<Option<i64>> {
        match self.store.head(&self.path(&blob_key(sha256_hex))).await {
            Ok(meta) => Ok(Some(meta.last_modified.timestamp())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).context("reading blob metadata"),
        }
    }

    /// Removes the blob with this SHA-256 (nothing if it is not there).
    pub async fn delete_blob(&self, sha256_hex: &str) -> anyhow::Result<()> {
        match self.store.delete(&self.path(&blob_key(sha256_hex))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context("removing a blob"),
        }
    }

    /// Whether the blob with this SHA-256 exists, and its size.
    pub async fn blob_size(&self, sha256_hex: &str) -> anyhow::Result<Option<u64>> {
        match self.store.head(&self.path(&blob_key(sha256_hex))).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).context("reading blob metadata"),
        }
    }

    /// A URL that fetches the blob with this SHA-256, without credentials, for `valid_for`
    /// (an S3 presigned GET); `None` for a local store, which has no such URL.
    pub async fn presigned_get(
        &self,
        sha256_hex: &str,
        valid_for: std::time::Duration,
    ) -> anyhow::Result<Option<url::Url>> {
        let Some(signer) = &self.signer else { return Ok(None) };
        let path = self.path(&blob_key(sha256_hex));
        let url = signer
            .signed_url(object_store::signer::Method::GET, &path, valid_for)
            .await
            .context("signing a download URL")?;
        Ok(Some(url))
    }

    /// `range` of a blob (all of it when `None`).
    pub async fn get(&self, sha256_hex: &str, range: Option<Range<u64>>) -> anyhow::Result<Blob> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let result = self.store.get_opts(&self.path(&blob_key(sha256_hex)), options).await.context("reading blob")?;
        Ok(match result.payload {
            GetResultPayload::File(file, _) => Blob::File(file, result.range),
            GetResultPayload::Stream(stream) => Blob::Stream(stream),
        })
    }

    /// Streams `range` of a blob (all of it when `None`).
    pub async fn read(
        &self,
        sha256_hex: &str,
        range: Option<Range<u64>>,
    ) -> anyhow::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        Ok(self.get(sha256_hex, range).await?.into_stream())
    }
}

/// Part of a blob, as [`BlobStore::get`] finds it.
pub enum Blob {
    /// A local store's file, open, and the byte range wanted of it.
    File(std::fs::File, Range<u64>),
    /// A remote store's answer.
    Stream(BoxStream<'static, object_store::Result<Bytes>>),
}

impl Blob {
    pub fn into_stream(self) -> BoxStream<'static, object_store::Result<Bytes>> {
        match self {
            Blob::File(file, range) => file_chunks(file, range),
            Blob::Stream(stream) => stream,
        }
    }
}

/// Why a store refused [`BlobStore::check`]'s request, where it says.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    NoBucket,
    Denied,
}

/// object_store turns a refused list request into a generic error whose text carries the HTTP
/// status and S3's error code (its status-bearing error type is private): read them there.
fn refusal_of(e: &object_store::Error) -> Option<Refusal> {
    match e {
        object_store::Error::NotFound { .. } => return Some(Refusal::NoBucket),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            return Some(Refusal::Denied);
        }
        _ => {}
    }
    let text = e.to_string();
    if text.contains("NoSuchBucket") || text.contains("404 Not Found") {
        Some(Refusal::NoBucket)
    } else if ["403 Forbidden", "401 Unauthorized", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"]
        .iter()
        .any(|code| text.contains(code))
    {
        Some(Refusal::Denied)
    } else {
        None
    }
}

/// What one blocking read of a local blob takes, where its bytes pass through memory (delta
/// computation, and a download on a connection without `http::sendfile`). object_store reads 8 KiB
/// per blocking call, a thread hop each.
const LOCAL_READ_CHUNK: u64 = 512 * 1024;

/// `range` of a local blob, read in [`LOCAL_READ_CHUNK`]s on the blocking pool.
fn file_chunks(file: std::fs::File, range: Range<u64>) -> BoxStream<'static, object_store::Result<Bytes>> {
    use futures_util::StreamExt;
    use std::os::unix::fs::FileExt;
    let file = Arc::new(file);
    futures_util::stream::try_unfold(range, move |range| {
        let file = file.clone();
        async move {
            if range.start >= range.end {
                return Ok(None);
            }
            let len = (range.end - range.start).min(LOCAL_READ_CHUNK);
            let read = tokio::task::spawn_blocking(move || {
                let mut buffer = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
                file.read_exact_at(&mut buffer, range.start).map(|()| buffer)
            })
            .await;
            let generic = |source: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
                store: "LocalFileSystem",
                source,
            };
            let buffer = read.map_err(|e| generic(Box::new(e)))?.map_err(|e| generic(Box::new(e)))?;
            Ok(Some((Bytes::from(buffer), range.start + len..range.end)))
        }
    })
    .boxed()
}

/// An upload in progress into a staging object.
pub struct StagedUpload {
    store: BlobStore,
    staging: Path,
    writer: WriteMultipart,
}

impl StagedUpload {
    /// Appends bytes, waiting when too many parts are in flight.
    pub async fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.writer.wait_for_capacity(UPLOAD_CONCURRENCY).await.context("writing a blob")?;
        self.writer.write(chunk);
        Ok(())
    }

    /// Completes the upload and moves it to its content address.
    pub async fn finish(self, sha256_hex: &str) -> anyhow::Result<()> {
        self.writer.finish().await.context("completing a blob upload")?;
        let target = self.store.path(&blob_key(sha256_hex));
        // Content-addressed: if the blob is already there, it holds the same bytes.
        self.store.store.rename(&self.staging, &target).await.context("moving a blob into place")
    }

    /// Abandons the upload and removes what was written.
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(error = %e, "aborting a blob upload failed");
        }
        let _ = self.store.store.delete(&self.staging).await;
    }
}

fn staging_cutoff_secs(max_age: std::time::Duration) -> i64 {
    jiff::Timestamp::now().as_second() - i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// Local blobs are read in chunks of their own: every range, across chunk boundaries and
    /// at the file's edges, must come out byte for byte, through the store's own range checks.
    #[tokio::test]
    async fn local_reads_return_exactly_the_requested_range() {
        use futures_util::TryStreamExt;
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(None, &BTreeMap::new(), dir.path()).unwrap();
        let chunk = usize::try_from(LOCAL_READ_CHUNK).unwrap();
        let content: Vec<u8> = (0..2 * chunk + 12_345).map(|i| u8::try_from(i * 7 % 251).unwrap()).collect();
        let sha = "ab".repeat(32);
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(dir.path().join(blob_key(&sha)), &content).unwrap();
        let len = content.len() as u64;
        let chunk = LOCAL_READ_CHUNK;
        for range in [
            None,
            Some(0..len),
            Some(1..len - 1),
            Some(chunk - 3..chunk + 3),
            Some(chunk..2 * chunk),
            Some(len - 1..len),
        ] {
            let chunks: Vec<Bytes> = store.read(&sha, range.clone()).await.unwrap().try_collect().await.unwrap();
            assert!(chunks.iter().all(|c| c.len() as u64 <= LOCAL_READ_CHUNK), "{range:?}");
            let got: Vec<u8> = chunks.concat();
            let want = range
                .clone()
                .map_or(&content[..], |r| &content[usize::try_from(r.start).unwrap()..usize::try_from(r.end).unwrap()]);
            assert!(got == want, "{range:?}: {} bytes, expected {}", got.len(), want.len());
        }
        assert!(store.read(&sha, Some(len..len + 1)).await.is_err(), "a range past the end is refused");
    }

    #[tokio::test]
    async fn cleanup_removes_only_old_staging_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(None, &BTreeMap::new(), dir.path()).unwrap();
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        let old = staging.join("abc#1");
        std::fs::write(&old, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        let fresh = staging.join("def#1");
        std::fs::write(&fresh, b"in progress").unwrap();
        assert_eq!(store.cleanup_staging(Duration::from_secs(3600)).await.unwrap(), 1);
        assert!(!old.exists());
        assert!(fresh.exists());
    }

    #[tokio::test]
    async fn an_upload_lands_at_its_content_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(None, &BTreeMap::new(), dir.path()).unwrap();
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(b"hello").await.unwrap();
        upload.finish("aa").await.unwrap();
        assert_eq!(store.blob_size("aa").await.unwrap(), Some(5));
        assert_eq!(store.blob_size("bb").await.unwrap(), None);
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
    }
}
