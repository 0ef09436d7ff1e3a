//! `patchgate release publish|yank|delta|approve`: releases on a running server.
//!
//! For a manufacturer-signed product, `publish --key` and `yank --key` build and sign the
//! product's next role here (see [`super::product`]): the file is hashed locally, and the role the
//! server holds is checked against the key before anything is signed on top of it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use futures_util::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use super::product::{RoleChange, current_role, listed_names, load_key, next_role, print_role_answer};
use super::{Refusal, Remote, ServerArgs, is_refusal};
use crate::domain::expiry::whole_seconds;
use crate::domain::names::{FileName, FirmwareVersion, HardwareId, ProductName, target_name};
use crate::tuf::keys::Signer;
use crate::tuf::metadata::{TargetEntry, product_targets};

/// Release commands.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Publish a firmware file (publisher token).
    Publish {
        #[command(flatten)]
        server: ServerArgs,
        /// Product name.
        #[arg(long)]
        product: String,
        /// Semantic version.
        #[arg(long)]
        version: String,
        /// Release notes.
        #[arg(long)]
        notes: Option<String>,
        /// Lowest version a device may go back to after installing this release.
        #[arg(long)]
        rollback_floor: Option<String>,
        /// The product key (manufacturer-signed products): the new role is signed here.
        #[arg(long)]
        key: Option<PathBuf>,
        /// A hardware id the image runs on (repeat; default: the product's). Only with --key.
        #[arg(long = "hardware-id", requires = "key")]
        hardware_ids: Vec<String>,
        /// The firmware file.
        file: PathBuf,
    },
    /// Withdraw a release: devices are no longer offered it (publisher token).
    Yank {
        #[command(flatten)]
        server: ServerArgs,
        /// Product name.
        #[arg(long)]
        product: String,
        /// The release's version.
        #[arg(long)]
        version: String,
        /// The product key (manufacturer-signed products): signs a role without the release.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Compute the delta from one release to another, so that devices running --from download
    /// only what changed (publisher token). Takes seconds per megabyte. Server-signed products:
    /// the server computes and signs it. Manufacturer-signed ones: with --key, computed here from
    /// the two images the product role lists and signed into the role here.
    Delta {
        #[command(flatten)]
        server: ServerArgs,
        /// Product name.
        #[arg(long)]
        product: String,
        /// The release devices run now.
        #[arg(long)]
        from: String,
        /// The release the delta produces.
        #[arg(long)]
        to: String,
        /// The product key (manufacturer-signed products): the delta is computed and signed here.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Approve a release published by someone else (release-manager or admin token).
    Approve {
        #[command(flatten)]
        server: ServerArgs,
        /// Product name.
        #[arg(long)]
        product: String,
        /// The release's version.
        #[arg(long)]
        version: String,
    },
}

#[derive(Deserialize)]
struct Published {
    target: PublishedTarget,
}

#[derive(Deserialize)]
struct PublishedTarget {
    name: String,
    length: u64,
    hashes: PublishedHashes,
}

#[derive(Deserialize)]
struct PublishedHashes {
    sha256: String,
}

/// A release being published: what the form carries besides the file.
struct Upload<'a> {
    product: &'a ProductName,
    version: &'a FirmwareVersion,
    notes: Option<String>,
    rollback_floor: Option<String>,
    file: &'a Path,
    file_name: &'a str,
}

/// A file's length and hashes, lowercase hex.
struct FileHashes {
    length: u64,
    sha256: String,
    sha512: String,
}

/// Runs a release command.
pub async fn run(cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::Publish { server, product, version, notes, rollback_floor, key, hardware_ids, file } => {
            let product = ProductName::parse(&product).context("--product")?;
            let version = FirmwareVersion::parse(&version).context("--version")?;
            let file_name = file
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow::anyhow!("{} has no usable file name", file.display()))?
                .to_owned();
            let upload = Upload {
                product: &product,
                version: &version,
                notes,
                rollback_floor,
                file: &file,
                file_name: &file_name,
            };
            let remote = server.remote()?;
            match key {
                Some(key) => publish_signed(&remote, &upload, &load_key(&key, "--key")?, &key, hardware_ids).await,
                None => print_published(send_release(&remote, &upload, None, &[]).await?),
            }
        }
        ReleaseCommand::Yank { server, product, version, key } => {
            let product = ProductName::parse(&product).context("--product")?;
            let version = FirmwareVersion::parse(&version).context("--version")?;
            let remote = server.remote()?;
            match key {
                Some(path) => yank_signed(&remote, &product, &version, &load_key(&path, "--key")?, &path).await,
                None => {
                    let segments = ["products", product.as_str(), "releases", &version.to_string(), "yank"];
                    let answer = remote.send_json(remote.api(Method::POST, &segments)).await.map_err(|e| {
                        if is_refusal(&e, "manufacturer_signed") {
                            e.context("the server cannot sign this product's role: yank with --key <product key>")
                        } else {
                            e
                        }
                    })?;
                    say!("yanked {product} {version} ({})", answer["target"]["name"].as_str().unwrap_or("-"));
                    Ok(())
                }
            }
        }
        ReleaseCommand::Delta { server, product, from, to, key } => {
            let product = ProductName::parse(&product).context("--product")?;
            let from = FirmwareVersion::parse(&from).context("--from")?;
            let to = FirmwareVersion::parse(&to).context("--to")?;
            let remote = server.remote()?;
            let answer = match key {
                Some(path) => delta_signed(&remote, &product, (&from, &to), &load_key(&path, "--key")?, &path).await?,
                None => {
                    let segments = ["products", product.as_str(), "releases", &to.to_string(), "deltas"];
                    eprintln!("computing the delta from {product} {from} to {to} on the server…");
                    let request =
                        remote.api(Method::POST, &segments).json(&serde_json::json!({"from": from.to_string()}));
                    remote.send_json(request).await.map_err(|e| {
                        if is_refusal(&e, "manufacturer_signed") {
                            e.context("the server cannot sign this product's role: run with --key <product key>")
                        } else {
                            e
                        }
                    })?
                }
            };
            let length = answer["length"].as_i64().unwrap_or(0);
            let image = answer["image_length"].as_i64().unwrap_or(0);
            say!(
                "{} ({length} bytes, {:.2} % of the {image}-byte image, sha256 {})",
                answer["target_name"].as_str().unwrap_or("-"),
                if image > 0 { 100.0 * length as f64 / image as f64 } else { 0.0 },
                answer["sha256"].as_str().unwrap_or("-")
            );
            Ok(())
        }
        ReleaseCommand::Approve { server, product, version } => {
            let product = ProductName::parse(&product).context("--product")?;
            let version = FirmwareVersion::parse(&version).context("--version")?;
            let remote = server.remote()?;
            let segments = ["products", product.as_str(), "releases", &version.to_string(), "approve"];
            remote.send_json(remote.api(Method::POST, &segments)).await?;
            say!("approved {product} {version}");
            Ok(())
        }
    }
}

/// `publish --key`: hash, then (again on each role conflict) build, sign and send the next role
/// with the file.
async fn publish_signed(
    remote: &Remote,
    upload: &Upload<'_>,
    key: &Signer,
    key_file: &Path,
    hardware_ids: Vec<String>,
) -> anyhow::Result<()> {
    let product = upload.product;
    let file_name = FileName::parse(upload.file_name)?;
    let floor = match &upload.rollback_floor {
        Some(f) => FirmwareVersion::parse(f).context("--rollback-floor")?,
        None => FirmwareVersion::zero(),
    };
    if &floor > upload.version {
        bail!("--rollback-floor {floor} is above the version {}", upload.version);
    }
    let hardware_ids =
        if hardware_ids.is_empty() { product_hardware_ids(remote, product).await? } else { hardware_ids };
    for h in &hardware_ids {
        HardwareId::parse(h).context("--hardware-id")?;
    }
    let hashes = hash_file(upload.file, upload.file_name).await?;
    let name = target_name(product, upload.version, &file_name);
    // A delisted release is listed again with the `custom` it was signed with first.
    let delisted = delisted_custom(remote, product, upload.version, &name, &hashes).await?;
    let published = super::product::with_role_retries("publishing", async || {
        let role = current_role(remote, product, key, key_file).await?;
        if let Some(listed) = listed_names(&role, product, upload.version).first() {
            let listed_sha256 = role.targets.get(listed).map(|t| hex::encode(&t.hashes.sha256)).unwrap_or_default();
            if listed.raw() == name && listed_sha256 == hashes.sha256 {
                return Ok(None);
            }
            bail!(
                "the {product} role already lists version {} as {} (sha256 {listed_sha256}), not {name} (sha256 {}): \
                 a version's content never changes, publish a new version",
                upload.version,
                listed.raw(),
                hashes.sha256
            );
        }
        let custom = match &delisted {
            Some(custom) => custom.clone(),
            None => patchgate_protocol::TargetCustom {
                version: upload.version.to_string(),
                hardware_ids: hardware_ids.clone(),
                rollback_floor: floor.to_string(),
                released_at: whole_seconds(Timestamp::now()).to_string(),
            },
        };
        let entry = TargetEntry {
            name: name.clone(),
            length: hashes.length,
            sha256: hashes.sha256.clone(),
            sha512: hashes.sha512.clone(),
            custom: custom.into(),
        };
        let (target_name, target) = product_targets(1, Timestamp::now(), std::slice::from_ref(&entry))?
            .targets
            .into_iter()
            .next()
            .context("building the new target")?;
        let mut next = next_role(&role, product, RoleChange::Add(target_name, Box::new(target)), Timestamp::now())?;
        let delist = retention_delist(remote, product).await?;
        for version in &delist {
            for listed in listed_names(&role, product, version) {
                next.targets.remove(&listed);
            }
        }
        if !delist.is_empty() {
            let versions: Vec<String> = delist.iter().map(ToString::to_string).collect();
            eprintln!(
                "delisting {} (the retention policy lets them go; their files stay on the server)",
                versions.join(", ")
            );
        }
        let signed = super::product::sign(product, next, key).await?;
        let text = String::from_utf8(signed).context("the signed role is not UTF-8")?;
        send_release(remote, upload, Some(text), &delist).await.map(Some)
    })
    .await?;
    match published {
        Some(published) => print_published(published),
        None => {
            eprintln!("already published (the {product} role lists this file)");
            say!("target: {name}");
            say!("sha256: {}", hashes.sha256);
            Ok(())
        }
    }
}

/// `delta --key`: fetches the two images the product role lists (checked against the role's
/// lengths and sha256, so the server cannot slip other bytes in), computes the delta here, and
/// signs the next role listing it (again on each role conflict); returns the server's answer.
async fn delta_signed(
    remote: &Remote,
    product: &ProductName,
    (from, to): (&FirmwareVersion, &FirmwareVersion),
    key: &Signer,
    key_file: &Path,
) -> anyhow::Result<Value> {
    use patchgate_protocol::{DeltaCustom, DeltaEnd, DeltaOf};
    let role = current_role(remote, product, key, key_file).await?;
    let image = |version: &FirmwareVersion| -> anyhow::Result<(String, tough::schema::Target)> {
        let name = listed_names(&role, product, version).into_iter().next().with_context(|| {
            format!("the {product} role does not list {version} (yanked, delisted, or never published)")
        })?;
        let target = role.targets.get(&name).cloned().context("reading the role")?;
        Ok((name.raw().to_owned(), target))
    };
    let ((from_name, from_target), (to_name, to_target)) = (image(from)?, image(to)?);
    if from == to {
        bail!("--from and --to are both {from}: a delta from a release to itself changes nothing");
    }
    let name = patchgate_protocol::delta_target_name(&to_name, &from.to_string());
    if let Some((_, listed)) = role.targets.iter().find(|(n, _)| n.raw() == name) {
        eprintln!("already listed (the {product} role lists {name})");
        return Ok(serde_json::json!({"target_name": name, "length": listed.length, "image_length": to_target.length,
            "sha256": hex::encode(&listed.hashes.sha256)}));
    }
    let old = fetch_listed(remote, &from_name, &from_target).await?;
    let new = fetch_listed(remote, &to_name, &to_target).await?;
    eprintln!("computing the delta from {product} {from} to {to} ({} → {} bytes)…", old.len(), new.len());
    let (patch, full) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let patch = crate::domain::delta::encode(&old, &new)?;
        Ok((patch, crate::domain::delta::compressed_len(&new)?))
    })
    .await??;
    let length = patch.bytes.len() as u64;
    if !crate::domain::delta::worthwhile(length, full) {
        bail!(
            "the delta from {from} to {to} is {length} bytes, more than {}% of the compressed image ({full} bytes): \
             not published, devices are better served by the full image",
            crate::domain::delta::MAX_SHARE_PERCENT
        );
    }
    let end = |name: &str, t: &tough::schema::Target| DeltaEnd {
        name: name.to_owned(),
        length: t.length,
        sha256: hex::encode(&t.hashes.sha256),
    };
    let entry = TargetEntry {
        name: name.clone(),
        length,
        sha256: hex::encode(Sha256::digest(&patch.bytes)),
        sha512: hex::encode(Sha512::digest(&patch.bytes)),
        custom: crate::tuf::metadata::EntryCustom::Delta(DeltaCustom {
            delta: DeltaOf {
                algorithm: patch.algorithm.to_owned(),
                source: end(&from_name, &from_target),
                target: end(&to_name, &to_target),
            },
        }),
    };
    let bytes = bytes::Bytes::from(patch.bytes);
    super::product::with_role_retries("listing the delta", async || {
        let role = current_role(remote, product, key, key_file).await?;
        let (target_name, target) = product_targets(1, Timestamp::now(), std::slice::from_ref(&entry))?
            .targets
            .into_iter()
            .next()
            .context("building the delta's target")?;
        let next = next_role(&role, product, RoleChange::Add(target_name, Box::new(target)), Timestamp::now())?;
        let signed = super::product::sign(product, next, key).await?;
        let part = reqwest::multipart::Part::stream_with_length(bytes.clone(), length)
            .file_name("delta")
            .mime_str("application/octet-stream")?;
        let form = reqwest::multipart::Form::new()
            .text("from", from.to_string())
            .text("role", String::from_utf8(signed).context("the signed role is not UTF-8")?)
            .part("file", part);
        let segments = ["products", product.as_str(), "releases", &to.to_string(), "deltas", "signed"];
        remote.send_json(remote.api(Method::POST, &segments).multipart(form)).await
    })
    .await
}

/// The image `name` from the server's repository, refused unless it is exactly the `target` the
/// product role lists.
async fn fetch_listed(remote: &Remote, name: &str, target: &tough::schema::Target) -> anyhow::Result<Vec<u8>> {
    let sha256 = hex::encode(&target.hashes.sha256);
    let (dir, file) = name.rsplit_once('/').context("a target name has a directory")?;
    let mut segments: Vec<String> = vec!["repo".into(), "targets".into()];
    segments.extend(dir.split('/').map(str::to_owned));
    segments.push(format!("{sha256}.{file}"));
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let bytes = remote.send_bytes(remote.get_public(&segments)).await.with_context(|| format!("downloading {name}"))?;
    if bytes.len() as u64 != target.length || hex::encode(Sha256::digest(&bytes)) != sha256 {
        bail!(
            "the server sent {} bytes for {name} that are not what the {} role lists ({} bytes, sha256 {sha256}): \
             refusing to sign a delta of them",
            bytes.len(),
            name.split('/').next().unwrap_or_default(),
            target.length
        );
    }
    Ok(bytes.to_vec())
}

/// The signed `custom` of `version` if the server holds it delisted with this very file (to list
/// it again, the role must carry it unchanged).
async fn delisted_custom(
    remote: &Remote,
    product: &ProductName,
    version: &FirmwareVersion,
    name: &str,
    hashes: &FileHashes,
) -> anyhow::Result<Option<patchgate_protocol::TargetCustom>> {
    let request = remote.api(Method::GET, &["products", product.as_str(), "releases", &version.to_string()]);
    let release = match remote.send_json(request).await {
        Ok(release) => release,
        Err(e) if super::is_refusal(&e, "unknown_release") => return Ok(None),
        Err(e) => return Err(e.context(format!("looking up {product} {version}"))),
    };
    let same_file = release["target"]["name"].as_str() == Some(name)
        && release["target"]["hashes"]["sha256"].as_str() == Some(hashes.sha256.as_str());
    if release["delisted"].as_bool() != Some(true) || !same_file {
        return Ok(None);
    }
    let custom = serde_json::from_value(release["custom"].clone())
        .with_context(|| format!("the server's custom of the delisted {product} {version}"))?;
    eprintln!("{product} {version} is delisted: listing it again");
    Ok(Some(custom))
}

/// The versions the product's retention policy takes out of the role at this publish.
async fn retention_delist(remote: &Remote, product: &ProductName) -> anyhow::Result<Vec<FirmwareVersion>> {
    let advice = remote
        .send_json(remote.api(Method::GET, &["products", product.as_str(), "retention"]))
        .await
        .with_context(|| format!("fetching {product}'s retention advice"))?;
    advice["delist_on_publish"]
        .as_array()
        .context("the retention advice has no delist_on_publish list")?
        .iter()
        .map(|v| {
            let v = v.as_str().context("a version in delist_on_publish is not a string")?;
            FirmwareVersion::parse(v).with_context(|| format!("delist_on_publish holds {v:?}"))
        })
        .collect()
}

/// `yank --key`: the next role without the release.
async fn yank_signed(
    remote: &Remote,
    product: &ProductName,
    version: &FirmwareVersion,
    key: &Signer,
    key_file: &Path,
) -> anyhow::Result<()> {
    let answer = super::product::with_role_retries("yanking", async || {
        let role = current_role(remote, product, key, key_file).await?;
        let next = next_role(&role, product, RoleChange::Remove(version.clone()), Timestamp::now())?;
        super::product::post_role(remote, product, super::product::sign(product, next, key).await?).await
    })
    .await?;
    print_role_answer(&answer);
    Ok(())
}

/// The product's hardware ids, as the server lists them.
async fn product_hardware_ids(remote: &Remote, product: &ProductName) -> anyhow::Result<Vec<String>> {
    let products = remote.send_json(remote.api(Method::GET, &["products"])).await.context("listing products")?;
    let found = products
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(product.as_str()))
        .with_context(|| format!("the server has no product {product}"))?;
    let ids: Vec<String> =
        found["hardware_ids"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
    if ids.is_empty() {
        bail!("product {product} lists no hardware ids: give them with --hardware-id");
    }
    Ok(ids)
}

fn progress_bar(length: u64, message: String) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Streams the file once through SHA-256 and SHA-512.
async fn hash_file(path: &Path, file_name: &str) -> anyhow::Result<FileHashes> {
    use sha2::Digest as _;
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let total = file.metadata().await.with_context(|| format!("reading {}", path.display()))?.len();
    let bar = progress_bar(total, format!("hashing {file_name}"));
    let (mut sha256, mut sha512, mut length) = (sha2::Sha256::new(), sha2::Sha512::new(), 0u64);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await.with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        sha512.update(&buf[..n]);
        length += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(FileHashes { length, sha256: hex::encode(sha256.finalize()), sha512: hex::encode(sha512.finalize()) })
}

/// Uploads the file (with a progress bar) and the form's text fields, and `role` if given.
async fn send_release(
    remote: &Remote,
    upload: &Upload<'_>,
    role: Option<String>,
    delist: &[FirmwareVersion],
) -> anyhow::Result<(reqwest::StatusCode, Published)> {
    let path = upload.file;
    let handle = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let meta = handle.metadata().await.with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let length = meta.len();
    let bar = progress_bar(length, format!("uploading {}", upload.file_name));
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024)
        .inspect_ok(move |chunk| progress.inc(chunk.len() as u64));
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), length)
        .file_name(upload.file_name.to_owned())
        .mime_str("application/octet-stream")?;
    let mut form = reqwest::multipart::Form::new().text("version", upload.version.to_string());
    for (field, value) in [("notes", &upload.notes), ("rollback_floor", &upload.rollback_floor), ("role", &role)] {
        if let Some(value) = value {
            form = form.text(field, value.clone());
        }
    }
    if !delist.is_empty() {
        form = form.text("delist", delist.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    }
    let request =
        remote.api(Method::POST, &["products", upload.product.as_str(), "releases"]).multipart(form.part("file", part));
    let sent = remote.send(request).await;
    bar.finish_and_clear();
    let (status, body) = sent.map_err(|e| {
        let what = format!("publishing {} {}", upload.product, upload.version);
        if e.downcast_ref::<Refusal>().is_some() {
            e.context(what)
        } else {
            e.context(format!(
                "{what} (it is idempotent: if the server may have received it, run the same command again)"
            ))
        }
    })?;
    let published = serde_json::from_slice(&body).context("the server's answer is not a release")?;
    Ok((status, published))
}

fn print_published((status, published): (reqwest::StatusCode, Published)) -> anyhow::Result<()> {
    let verb =
        if status == reqwest::StatusCode::CREATED { "published" } else { "already published (identical content)" };
    eprintln!("{verb}: {} bytes", published.target.length);
    say!("target: {}", published.target.name);
    say!("sha256: {}", published.target.hashes.sha256);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_hashed_with_both_algorithms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin");
        std::fs::write(&path, b"abc").unwrap();
        let hashes = hash_file(&path, "fw.bin").await.unwrap();
        assert_eq!(hashes.length, 3);
        assert_eq!(hashes.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(hashes.sha512.starts_with("ddaf35a193617aba"));
        assert_eq!(hashes.sha512.len(), 128);
    }
}
