//! A client for the TUF community's client conformance suite (theupdateframework/
//! tuf-conformance), speaking its command-line protocol (`init`, `refresh`, `download`) with
//! the agent's own code: the same refresh devices run ([`patchgate_agent::tuf`]) and the
//! same download and verification ([`patchgate_agent::download`]). `scripts/test.sh` runs the
//! suite against it; the failures we expect are listed, each with its reason, in
//! `scripts/tuf-conformance-client.xfails`.
//!
//! Exit code 0 when the command succeeded fully, 1 otherwise (the protocol's), with the reason
//! on standard error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use patchgate_agent::AgentError;
use patchgate_agent::download::{Retry, SignedFile, Source, fetch_verified, verify_file};
use patchgate_agent::net::{TufTransport, http_client};
use patchgate_agent::state::{Datastore, write_atomic};
use patchgate_agent::tuf::{TrustedRepo, Versioning};
use url::Url;

#[derive(Debug, Parser)]
#[command(about = "patchgate's agent as a client under test for the TUF conformance suite")]
struct Cli {
    /// Where the client keeps the metadata it trusts (plain names: root.json, timestamp.json…).
    #[arg(long)]
    metadata_dir: PathBuf,
    /// The repository's metadata URL.
    #[arg(long)]
    metadata_url: Option<Url>,
    /// A target to download (repeatable; in order, stopping at the first failure).
    #[arg(long = "target-name")]
    target_names: Vec<String>,
    /// The repository's targets URL.
    #[arg(long)]
    target_base_url: Option<Url>,
    /// Where verified targets go.
    #[arg(long)]
    target_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trusts TRUSTED_ROOT as the initial root (no checks, no requests).
    Init {
        /// A file holding the initial root.json.
        trusted_root: PathBuf,
    },
    /// Refreshes the top-level metadata (delegated roles are loaded only to find a target).
    Refresh,
    /// Refreshes, then downloads and verifies each --target-name into --target-dir.
    Download,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tuf-conformance-client: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tuf-conformance-client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's datastore lives in a folder of the metadata directory: the agent keeps files that
/// are not roles there (`latest_known_time.json`, `provisioned.root.json`), while the suite
/// reads every `*.json` of the metadata directory as a role it trusts. What the datastore trusts
/// (delegated roles under their encoded names too) is copied out after every refresh and
/// download ([`mirror`]).
const STORE: &str = "agent";
/// Files of the datastore that are not roles.
const NOT_ROLES: [&str; 2] = ["latest_known_time.json", "provisioned.root.json"];

async fn run(cli: Cli) -> Result<(), AgentError> {
    let store = Datastore::new(cli.metadata_dir.join(STORE));
    let client = http_client(None)?;
    match &cli.command {
        Command::Init { trusted_root } => {
            let bytes = std::fs::read(trusted_root)
                .map_err(|e| AgentError::Usage(format!("reading {}: {e}", trusted_root.display())))?;
            std::fs::create_dir_all(store.path())
                .map_err(|e| AgentError::local(format!("creating {}", store.path().display()), e))?;
            write_atomic(&store.path().join("provisioned.root.json"), &bytes)?;
            mirror(&store, &cli.metadata_dir)
        }
        Command::Refresh => {
            let refreshed = refresh(&cli, &store, &client).await;
            mirror(&store, &cli.metadata_dir)?;
            refreshed.map(drop)
        }
        Command::Download => {
            let refreshed = refresh(&cli, &store, &client).await;
            mirror(&store, &cli.metadata_dir)?;
            let mut repo = refreshed?;
            let base = required(cli.target_base_url.as_ref(), "--target-base-url")?;
            let dir = required(cli.target_dir.as_ref(), "--target-dir")?;
            // Partial downloads stay out of the target directory, which the suite reads whole.
            let staging = cli.metadata_dir.join("staging");
            std::fs::create_dir_all(&staging)
                .map_err(|e| AgentError::local(format!("creating {}", staging.display()), e))?;
            let mut result = Ok(());
            for name in &cli.target_names {
                result = download(&mut repo, &client, base, dir, &staging, name).await;
                if result.is_err() {
                    break;
                }
            }
            // The walk may have loaded delegated roles: the suite expects to see them trusted.
            mirror(&store, &cli.metadata_dir)?;
            result
        }
    }
}

/// Makes the `*.json` files of `metadata_dir` exactly the roles `store` trusts now (its
/// `root.json`, or the provisioned root before the first refresh).
fn mirror(store: &Datastore, metadata_dir: &Path) -> Result<(), AgentError> {
    let local = |what: &Path, e: std::io::Error| AgentError::local(format!("mirroring {}", what.display()), e);
    let mut roles: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(store.path()).map_err(|e| local(store.path(), e))? {
        let path = entry.map_err(|e| local(store.path(), e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if path.is_file() && name.ends_with(".json") && !NOT_ROLES.contains(&name.as_str()) {
            roles.push((name, std::fs::read(&path).map_err(|e| local(&path, e))?));
        }
    }
    if !roles.iter().any(|(name, _)| name == "root.json") {
        roles.push(("root.json".to_owned(), store.trusted_root()?));
    }
    for entry in std::fs::read_dir(metadata_dir).map_err(|e| local(metadata_dir, e))? {
        let path = entry.map_err(|e| local(metadata_dir, e))?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".json") && !roles.iter().any(|(name, _)| name == n));
        if stale && path.is_file() {
            std::fs::remove_file(&path).map_err(|e| local(&path, e))?;
        }
    }
    for (name, bytes) in roles {
        write_atomic(&metadata_dir.join(name), &bytes)?;
    }
    Ok(())
}

fn required<'a, T>(value: Option<&'a T>, flag: &str) -> Result<&'a T, AgentError> {
    value.ok_or_else(|| AgentError::Usage(format!("{flag} is required")))
}

async fn refresh(cli: &Cli, store: &Datastore, client: &reqwest::Client) -> Result<TrustedRepo, AgentError> {
    let metadata_url = with_slash(required(cli.metadata_url.as_ref(), "--metadata-url")?);
    let transport = TufTransport::new(client.clone(), None);
    patchgate_agent::tuf::refresh(store, "repository", metadata_url, transport, Versioning::Unique).await
}

fn with_slash(url: &Url) -> Url {
    let mut url = url.clone();
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    url
}

/// Downloads `name` as the verified metadata of `repo` describes it, unless a verified copy is
/// in `dir` already.
async fn download(
    repo: &mut TrustedRepo,
    client: &reqwest::Client,
    base: &Url,
    dir: &Path,
    staging: &Path,
    name: &str,
) -> Result<(), AgentError> {
    let target_name =
        tough::TargetName::new(name).map_err(|e| AgentError::Usage(format!("target name {name:?}: {e}")))?;
    let target = repo
        .find_target(&target_name)
        .await?
        .ok_or_else(|| AgentError::Usage(format!("{name}: no role the delegation graph reaches lists it")))?;
    let file = SignedFile::of_target(name, &target);
    // One file per target name, the same on every download (the suite's expectation).
    let out = dir.join(url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>());
    if verify_file(&out, &file).await.is_ok() {
        return Ok(());
    }
    let url = if repo.root().signed.consistent_snapshot {
        patchgate_agent::download::target_url(&with_slash(base), &file)?
    } else {
        with_slash(base).join(name).map_err(|e| AgentError::Usage(format!("{name}: {e}")))?
    };
    let retry = Retry { retries: 0, backoff: Duration::ZERO, backoff_max: Duration::ZERO };
    let verified = fetch_verified(client, Source { url: &url, token: None }, &file, staging, retry).await?;
    std::fs::create_dir_all(dir).map_err(|e| AgentError::local(format!("creating {}", dir.display()), e))?;
    let moving =
        |e: std::io::Error| AgentError::local(format!("moving {} to {}", verified.display(), out.display()), e);
    if std::fs::rename(&verified, &out).is_err() {
        // Another file system: copy, then drop the staged file.
        std::fs::copy(&verified, &out).map_err(moving)?;
        std::fs::remove_file(&verified).map_err(moving)?;
    }
    Ok(())
}
