//! `patchgate repo init|export-root|rotate-root` (local: they read the configuration and open the
//! database and key directory) and `repo prepare|sign|submit` (ceremonies, see
//! [`super::ceremony`]: they read no configuration, so `sign` works on a machine with none).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use super::ceremony;
use crate::config::Config;
use crate::services::auth::Caller;
use crate::services::init_repo::init_repositories;
use crate::services::root_rotation::{export_root, rotate_image_root};
use crate::tuf::keydir;

/// Repository commands.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Commands on this machine's configuration, database and key directory.
    #[command(flatten)]
    Local(LocalRepoCommand),
    /// Ask a running server for the unsigned next root or top-level targets (admin token).
    Prepare(ceremony::PrepareArgs),
    /// Sign a prepared metadata file with your key, offline (no server or configuration needed).
    Sign(ceremony::SignArgs),
    /// Upload signed metadata from a ceremony to a running server (admin token).
    Submit(ceremony::SubmitArgs),
}

/// Repository commands on local state.
#[derive(Debug, Subcommand)]
pub enum LocalRepoCommand {
    /// Sign root 1 and the first targets, snapshot and timestamp, and the director's root.
    Init,
    /// Write the newest root of a repository (for device provisioning).
    ExportRoot {
        /// image | director
        #[arg(long, default_value = "image")]
        repo: String,
        /// File to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign image root N+1, cross-signed by a threshold of the old and the new root keys.
    RotateRoot {
        /// Replace the image root keys with this many fresh ones (old ones move to
        /// `offline/retired-vN/`). Without it, root N+1 re-signs the same keys (extends expiry).
        #[arg(long)]
        root_keys: Option<usize>,
        /// Threshold for the new root keys (default: as many as --root-keys, at most 2).
        #[arg(long)]
        root_threshold: Option<u64>,
    },
}

/// Runs a repository command; only local commands load the configuration (`config_file`).
pub async fn run(config_file: Option<&Path>, cmd: RepoCommand) -> anyhow::Result<()> {
    match cmd {
        RepoCommand::Local(cmd) => run_local(super::load_config(config_file)?, cmd).await,
        RepoCommand::Prepare(args) => ceremony::prepare(args).await,
        RepoCommand::Sign(args) => ceremony::sign(args).await,
        RepoCommand::Submit(args) => ceremony::submit(args).await,
    }
}

/// Runs a local repository command.
async fn run_local(config: Config, cmd: LocalRepoCommand) -> anyhow::Result<()> {
    let keys_dir = config.keys_dir.clone();
    let svc = super::local_services(config).await?;
    match cmd {
        LocalRepoCommand::Init => {
            let outcome = init_repositories(&svc, &Caller::operator()).await?;
            say!(
                "image repository: {}; director root: {}",
                if outcome.image_created { "initialised" } else { "already initialised" },
                if outcome.director_created { "initialised" } else { "already initialised" }
            );
        }
        LocalRepoCommand::ExportRoot { repo, out } => {
            let root = export_root(&svc, &repo).await?;
            std::fs::write(&out, &root.bytes).with_context(|| format!("writing {}", out.display()))?;
            say!("wrote {repo} root version {} to {}", root.version, out.display());
            say!("sha256: {}", root.sha256);
            say!("root keyids: {}", root.root_keyids.join(", "));
        }
        LocalRepoCommand::RotateRoot { root_keys, root_threshold } => {
            let old = svc.keys.image_root.clone();
            let current = u64::try_from(export_root(&svc, "image").await?.version).unwrap_or(0);
            let mut new_keys = (*svc.keys).clone();
            // New key files stay apart until the new root is stored (see keydir::stage_root_keys).
            let pending = match root_keys {
                Some(count) => {
                    let threshold = root_threshold.unwrap_or_else(|| (count as u64).min(2));
                    let pending = keydir::stage_root_keys(&keys_dir, current + 1, count, threshold)?;
                    new_keys.image_root = pending.keys.clone();
                    new_keys.image_root_files = (1..=count).map(keydir::root_key_file).collect();
                    new_keys.image_root_threshold = threshold;
                    Some(pending)
                }
                None if root_threshold.is_some() => anyhow::bail!("--root-threshold needs --root-keys"),
                None => None,
            };
            let root = match rotate_image_root(&svc, &Caller::operator(), &old, &new_keys).await {
                Ok(root) => root,
                Err(e) => {
                    if let Some(pending) = &pending {
                        keydir::discard_pending(pending);
                    }
                    return Err(e.into());
                }
            };
            if let Some(pending) = &pending {
                keydir::install_root_keys(&keys_dir, pending, current).with_context(|| {
                    format!(
                        "root v{} is stored; its keys are in {}: move them into offline/",
                        root.version,
                        pending.dir.display()
                    )
                })?;
            }
            say!("signed image root version {} (sha256 {})", root.version, root.sha256);
            say!(
                "root keyids: {}",
                new_keys.image_root.iter().map(|k| k.keyid().to_owned()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(())
}
