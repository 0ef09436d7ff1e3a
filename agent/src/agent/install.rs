//! Installing a verified target into the slot, confirming it after the reboot, and the polling
//! loop (`run`).
//!
//! Nothing reaches the slot before [`crate::download::fetch_verified`] checked the signed length,
//! sha256 and sha512; the slot is written through a temporary file and a rename, so it holds
//! either the old image or the whole new one. Hooks and preconditions run without a shell.

use std::path::{Path, PathBuf};
use std::time::Duration;

use patchgate_protocol::AttemptState;
use tokio::io::AsyncWriteExt;

use super::{Agent, CheckOutcome};
use crate::download::{fetch_verified, target_url};
use crate::error::AgentError;
use crate::state::{AttemptRecord, InstalledRecord, sync_dir};
use crate::verify::Assigned;

/// Where and how to install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// The install slot: the verified image is written here.
    pub slot: PathBuf,
    /// Run after the slot is written, with the slot's path as its last argument.
    pub hook: Option<Vec<String>>,
    /// Must exit 0 before the slot is touched (e.g. a pump mid-therapy says no).
    pub precondition: Option<Vec<String>>,
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallOutcome {
    /// Nothing is assigned, or the assigned image already runs.
    Nothing,
    /// Written to the slot; reboot into it, then `confirm`.
    Installed(Assigned),
    /// An installed image already waits for the reboot.
    AwaitingReboot(Assigned),
    /// Downloaded and verified, but the precondition said not now; try again later.
    Waiting(Assigned),
    /// Its last attempt failed; the polling loop does not retry it (`install` does).
    FailedBefore(Assigned),
}

/// What `confirm` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The device runs the installed target; reported `installed`.
    Confirmed(InstalledRecord),
    /// Nothing was waiting for confirmation and the running image is the recorded one.
    Nothing,
}

fn attempt(target: &Assigned, state: AttemptState, detail: Option<String>) -> AttemptRecord {
    AttemptRecord { name: target.name.clone(), state, detail, target: Some(target.clone()) }
}

/// Runs `command` (program and arguments, no shell) with `extra` appended; its exit status.
async fn run_command(
    command: &[String],
    extra: Option<&Path>,
    target: &Assigned,
) -> Result<std::process::ExitStatus, String> {
    let (program, args) = command.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("PATCHGATE_TARGET_NAME", &target.name)
        .env("PATCHGATE_TARGET_VERSION", &target.version)
        .env("PATCHGATE_TARGET_SHA256", &target.sha256)
        .stdin(std::process::Stdio::null());
    if let Some(path) = extra {
        cmd.arg(path);
    }
    cmd.status().await.map_err(|e| format!("{program}: {e}"))
}

/// Copies `from` into `slot`: a regular file through a temporary file next to it, fsync,
/// rename (all or nothing); a block or character device (a partition) in place, then fsync.
async fn write_slot(from: &Path, slot: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let is_device = tokio::fs::metadata(slot)
        .await
        .is_ok_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device());
    if is_device {
        let result = async {
            let mut src = tokio::fs::File::open(from).await?;
            let mut dst = tokio::fs::OpenOptions::new().write(true).open(slot).await?;
            tokio::io::copy(&mut src, &mut dst).await?;
            dst.flush().await?;
            dst.sync_all().await
        }
        .await;
        return result.map_err(|e| format!("writing the slot {}: {e}", slot.display()));
    }
    let dir = slot.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.patchgate-tmp",
        slot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let result = async {
        let mut src = tokio::fs::File::open(from).await?;
        let mut dst = tokio::fs::File::create(&tmp).await?;
        tokio::io::copy(&mut src, &mut dst).await?;
        dst.flush().await?;
        dst.sync_all().await?;
        drop(dst);
        tokio::fs::rename(&tmp, slot).await?;
        sync_dir(dir)
    }
    .await;
    if result.is_err() {
        drop(tokio::fs::remove_file(&tmp).await);
    }
    result.map_err(|e| format!("writing the slot {}: {e}", slot.display()))
}

impl Agent {
    /// `install`: check (with a full refresh), download and verify, wait for the precondition,
    /// write the slot, run the hook, report `awaiting_reboot`.
    pub async fn install(&mut self, opts: &InstallOptions) -> Result<InstallOutcome, AgentError> {
        let outcome = self.poll_once(true).await?;
        self.install_checked(outcome, opts, true).await
    }

    /// Installs what a poll found. Without `retry_failed`, a target whose last attempt failed
    /// (the hook, or the wrong image after the reboot) is not tried again: a polling device
    /// must not re-flash an image that fails at every boot; an explicit `install` retries.
    pub(crate) async fn install_checked(
        &mut self,
        outcome: CheckOutcome,
        opts: &InstallOptions,
        retry_failed: bool,
    ) -> Result<InstallOutcome, AgentError> {
        let target = match outcome {
            CheckOutcome::Nothing => return Ok(InstallOutcome::Nothing),
            CheckOutcome::AwaitingReboot(t) => return Ok(InstallOutcome::AwaitingReboot(t)),
            CheckOutcome::Assigned(t) => t,
        };
        let failed_before = self.state.attempt()?.is_some_and(|a| {
            a.state == AttemptState::Failed && a.target.as_ref().is_some_and(|t| t.sha256 == target.sha256)
        });
        if failed_before && !retry_failed {
            return Ok(InstallOutcome::FailedBefore(target));
        }
        let resumed =
            self.state.attempt()?.is_some_and(|a| a.state == AttemptState::Downloading && a.name == target.name);
        if !resumed {
            self.set_attempt(attempt(&target, AttemptState::Downloading, None)).await?;
        }
        let url = target_url(&self.net.url("repo/targets/")?, &target)?;
        let verified =
            match fetch_verified(self.net.client(), &url, &target, &self.state.staging(), self.tuning.retry).await {
                Ok(path) => path,
                Err(AgentError::Refused(refusal)) => {
                    self.reject(target.name.clone(), Some(target.clone()), refusal.clone()).await?;
                    return Err(AgentError::Refused(refusal));
                }
                Err(e) => return Err(e),
            };
        if let Some(pre) = &opts.precondition {
            let status = run_command(pre, None, &target).await.map_err(AgentError::Usage)?;
            if !status.success() {
                let detail = format!("downloaded and verified; waiting: the precondition said not now ({status})");
                self.set_attempt(attempt(&target, AttemptState::Downloading, Some(detail))).await?;
                return Ok(InstallOutcome::Waiting(target));
            }
        }
        self.set_attempt(attempt(&target, AttemptState::Installing, None)).await?;
        if let Err(message) = write_slot(&verified, &opts.slot).await {
            return self.fail(&target, message).await;
        }
        if let Some(hook) = &opts.hook {
            match run_command(hook, Some(&opts.slot), &target).await {
                Ok(status) if status.success() => {}
                Ok(status) => return self.fail(&target, format!("the install hook exited with {status}")).await,
                Err(message) => return self.fail(&target, format!("the install hook could not run: {message}")).await,
            }
        }
        self.set_attempt(attempt(&target, AttemptState::AwaitingReboot, None)).await?;
        drop(tokio::fs::remove_file(&verified).await);
        Ok(InstallOutcome::Installed(target))
    }

    async fn fail<T>(&mut self, target: &Assigned, message: String) -> Result<T, AgentError> {
        self.set_attempt(attempt(target, AttemptState::Failed, Some(message.clone()))).await?;
        Err(AgentError::Install(message))
    }

    /// `confirm`: after the reboot, reports `installed` if the running image is the installed
    /// target, else `failed`.
    pub async fn confirm(&mut self, running_sha256: &str) -> Result<ConfirmOutcome, AgentError> {
        let running = running_sha256.trim().to_ascii_lowercase();
        if running.len() != 64 || !running.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AgentError::Usage(format!("--running-sha256 {running_sha256:?} is not 64 hex characters")));
        }
        let pending = self.state.attempt()?.filter(|a| a.state == AttemptState::AwaitingReboot).and_then(|a| a.target);
        let Some(target) = pending else {
            if self.state.installed()?.is_some_and(|i| i.sha256 == running) {
                return Ok(ConfirmOutcome::Nothing);
            }
            return Err(AgentError::Usage("no installed update waits for confirmation".into()));
        };
        if running != target.sha256 {
            return self
                .fail(
                    &target,
                    format!("after the reboot the device runs {running}, not the installed {}", target.sha256),
                )
                .await;
        }
        let installed = InstalledRecord {
            name: target.name.clone(),
            sha256: target.sha256.clone(),
            version: target.version.clone(),
            rollback_floor: target.rollback_floor.clone(),
        };
        self.state.set_installed(Some(&installed))?;
        self.set_attempt(attempt(&target, AttemptState::Installed, None)).await?;
        Ok(ConfirmOutcome::Confirmed(installed))
    }

    /// `run`: polls until `stop` resolves, with the server's interval ±10 % jitter, exponential
    /// backoff on network errors, installing what verifies. Stops cleanly between steps; a
    /// download cut off by the stop resumes on the next start.
    pub async fn run(
        &mut self,
        opts: &InstallOptions,
        stop: impl std::future::Future<Output = ()>,
        mut on_event: impl FnMut(&Result<InstallOutcome, AgentError>),
    ) -> Result<(), AgentError> {
        tokio::pin!(stop);
        let mut failures = 0u32;
        loop {
            let cycle = async {
                let outcome = self.poll_once(false).await?;
                self.install_checked(outcome, opts, false).await
            };
            let result = tokio::select! {
                () = &mut stop => return Ok(()),
                result = cycle => result,
            };
            on_event(&result);
            let wait = match &result {
                Err(AgentError::Network(_)) => {
                    failures = failures.saturating_add(1);
                    self.tuning.retry.delay(failures - 1).min(self.poll)
                }
                Err(AgentError::Local(_) | AgentError::Usage(_)) => return result.map(|_| ()),
                _ => {
                    failures = 0;
                    jitter(self.poll)
                }
            };
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// `base` ± 10 %, so a fleet that booted together does not poll together.
pub fn jitter(base: Duration) -> Duration {
    use rand_core::RngCore;
    let r = f64::from(rand_core::OsRng.next_u32()) / f64::from(u32::MAX);
    base.mul_f64(0.9 + 0.2 * r)
}
