//! `patchgate release publish`: upload a firmware file to a running server with a progress bar.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use futures_util::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

/// Release commands.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Publish a firmware file.
    Publish {
        /// Server URL, e.g. http://127.0.0.1:8080
        #[arg(long, env = "PATCHGATE_SERVER")]
        server: String,
        /// A publisher token (or PATCHGATE_TOKEN).
        #[arg(long, env = "PATCHGATE_TOKEN", hide_env_values = true)]
        token: String,
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
        /// The firmware file.
        file: PathBuf,
    },
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
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

/// Runs a release command.
pub async fn run(cmd: ReleaseCommand) -> anyhow::Result<()> {
    let ReleaseCommand::Publish { server, token, product, version, notes, rollback_floor, file } = cmd;
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("{} has no usable file name", file.display()))?
        .to_owned();
    let handle = tokio::fs::File::open(&file).await.with_context(|| format!("opening {}", file.display()))?;
    let meta = handle.metadata().await.with_context(|| format!("reading {}", file.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", file.display());
    }
    let length = meta.len();
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("uploading {file_name}"));
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024)
        .inspect_ok(move |chunk| progress.inc(chunk.len() as u64));
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), length)
        .file_name(file_name)
        .mime_str("application/octet-stream")?;
    let mut form = reqwest::multipart::Form::new().text("version", version);
    if let Some(notes) = notes {
        form = form.text("notes", notes);
    }
    if let Some(floor) = rollback_floor {
        form = form.text("rollback_floor", floor);
    }
    let url = format!("{}/api/v1/products/{product}/releases", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .multipart(form.part("file", part))
        .send()
        .await
        .with_context(|| {
            format!("sending to {url} (publishing is idempotent: if the server may have received it, run the same command again)")
        })?;
    bar.finish_and_clear();
    let status = response.status();
    let body = response.bytes().await.context("reading the server's answer")?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => bail!("the server refused the release ({status}, {}): {}", e.error, e.message),
            Err(_) => bail!("the server answered {status}: {}", String::from_utf8_lossy(&body)),
        }
    }
    let published: Published = serde_json::from_slice(&body).context("the server's answer is not a release")?;
    let verb =
        if status == reqwest::StatusCode::CREATED { "published" } else { "already published (identical content)" };
    eprintln!("{verb}: {} bytes", published.target.length);
    println!("target: {}", published.target.name);
    println!("sha256: {}", published.target.hashes.sha256);
    Ok(())
}
