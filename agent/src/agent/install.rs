//! Installing a verified target into the slot, confirming it after the reboot, and the polling
//! loop (`run`).
//!
//! Nothing reaches the slot before [`crate::download::fetch_verified`] checked the signed length,
//! sha256 and sha512 (or, for an image built from a delta, [`crate::delta::apply`] checked the
//! same of what it built); the slot is written through a temporary file and a rename, so it holds
//! either the old image or the whole new one. Hooks and preconditions run without a shell.

use std::path::{Path, PathBuf};
use std::time::Duration;

use patchgate_protocol::AttemptState;
use tokio::io::AsyncWriteExt;

use super::{Agent, CheckOutcome};
use crate::download::{SignedFile, Source, fetch_verified, target_url};
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
    /// The image the device runs now (read only): the source for a delta (docs/design.md §2.6, "Deltas").
    pub running_image: Option<PathBuf>,
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

/// A verified image in staging, ready for the slot.
struct Prepared {
    target: Assigned,
    verified: PathBuf,
    /// How the image arrived (a delta, or the full image and why), for the attempt's detail.
    path: String,
}

/// What trying a delta came to.
enum DeltaResult {
    /// No delta applies (no running image given, none listed from it).
    None,
    /// The whole image is already in staging, downloaded or built by an earlier pass (the
    /// precondition said "not now"): verified again as the full image is, never built again.
    Staged,
    /// The verified image, built from this delta.
    Built(PathBuf, String),
    /// A delta applied but failed; the full image follows. Why, for the attempt's detail.
    Failed(String),
}

/// Where [`Agent::prepare`] got to.
enum Step {
    /// Finished without touching the slot.
    Done(InstallOutcome),
    /// Ready for [`Agent::commit`].
    Ready(Prepared),
}

/// The higher of two rollback floors (semver); an unparsable stored floor yields to the new one.
fn higher_floor(current: Option<String>, new: &str) -> String {
    match current {
        Some(cur) => match (semver::Version::parse(&cur), semver::Version::parse(new)) {
            (Ok(c), Ok(n)) if c > n => cur,
            _ => new.to_owned(),
        },
        None => new.to_owned(),
    }
}

/// The attempt record for `target`; a detail longer than a report allows is cut to fit (a
/// report the server refuses would be retried forever).
fn attempt(target: &Assigned, state: AttemptState, detail: Option<String>) -> AttemptRecord {
    let detail = detail.map(|d| d.chars().take(patchgate_protocol::report::MAX_DETAIL_CHARS).collect());
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
    // stdout is the agent's one JSON answer: the hook's output goes to stderr.
    if let Ok(stderr) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
        cmd.stdout(std::process::Stdio::from(stderr));
    }
    if let Some(path) = extra {
        cmd.arg(path);
    }
    cmd.status().await.map_err(|e| format!("{program}: {e}"))
}

/// Copies `from` into `slot`, hashing what it copies (the staging file must still be the image
/// that verified): a regular file through a temporary file next to it, fsync, rename (all or
/// nothing); a block or character device (a partition) in place, then fsync.
async fn write_slot(from: &Path, slot: &Path, sha256: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let is_device = tokio::fs::metadata(slot)
        .await
        .is_ok_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device());
    let dir = slot.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.patchgate-tmp",
        slot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let target = if is_device { slot.to_path_buf() } else { tmp.clone() };
    let result = async {
        let mut src = tokio::fs::File::open(from).await?;
        let mut dst = if is_device {
            tokio::fs::OpenOptions::new().write(true).open(&target).await?
        } else {
            tokio::fs::File::create(&target).await?
        };
        let copied = copy_hashing(&mut src, &mut dst).await?;
        dst.flush().await?;
        dst.sync_all().await?;
        drop(dst);
        if copied != sha256 {
            return Err(std::io::Error::other(format!("the staged image changed after it verified ({copied})")));
        }
        if !is_device {
            tokio::fs::rename(&tmp, slot).await?;
            sync_dir(dir)?;
        }
        Ok(())
    }
    .await;
    if result.is_err() && !is_device {
        drop(tokio::fs::remove_file(&tmp).await);
    }
    result.map_err(|e| format!("writing the slot {}: {e}", slot.display()))
}

/// Copies `src` to `dst`; the sha256 of what was copied.
async fn copy_hashing(src: &mut tokio::fs::File, dst: &mut tokio::fs::File) -> std::io::Result<String> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = src.read(&mut buf).await?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
        hasher.update(chunk);
        dst.write_all(chunk).await?;
    }
    Ok(hex::encode(hasher.finalize()))
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
        match self.prepare(outcome, opts, retry_failed).await? {
            Step::Done(outcome) => Ok(outcome),
            Step::Ready(prepared) => self.commit(prepared, opts).await,
        }
    }

    /// Everything before the slot is touched (may be cancelled): download, verify, precondition.
    async fn prepare(
        &mut self,
        outcome: CheckOutcome,
        opts: &InstallOptions,
        retry_failed: bool,
    ) -> Result<Step, AgentError> {
        let target = match outcome {
            CheckOutcome::Nothing => return Ok(Step::Done(InstallOutcome::Nothing)),
            CheckOutcome::AwaitingReboot(t) => return Ok(Step::Done(InstallOutcome::AwaitingReboot(t))),
            CheckOutcome::Assigned(t) => t,
        };
        let previous = self.state.attempt()?;
        let failed_before = previous.as_ref().is_some_and(|a| {
            a.state == AttemptState::Failed && a.target.as_ref().is_some_and(|t| t.sha256 == target.sha256)
        });
        if failed_before && !retry_failed {
            return Ok(Step::Done(InstallOutcome::FailedBefore(target)));
        }
        let mut keep = vec![target.sha256.clone()];
        keep.extend(self.delta_offers.iter().map(|o| o.file.sha256.clone()));
        self.clear_other_staging(&keep).await;
        let resumed = previous.is_some_and(|a| a.state == AttemptState::Downloading && a.name == target.name);
        if !resumed {
            self.set_attempt(attempt(&target, AttemptState::Downloading, None)).await?;
        }
        let fallback = match self.try_delta(&target, opts).await {
            DeltaResult::Built(verified, path) => return self.precondition(target, verified, path, opts).await,
            DeltaResult::None => "full image".to_owned(),
            DeltaResult::Staged => "image staged by an earlier pass".to_owned(),
            DeltaResult::Failed(why) => {
                // Said now too, so the reason is on record even if the full download fails.
                let detail = format!("{why}; downloading the full image");
                self.set_attempt(attempt(&target, AttemptState::Downloading, Some(detail))).await?;
                format!("full image ({why})")
            }
        };
        let file = SignedFile::from(&target);
        let url = target_url(&self.net.url("repo/targets/")?, &file)?;
        let verified =
            match fetch_verified(self.net.client(), self.source(&url), &file, &self.state.staging(), self.tuning.retry)
                .await
            {
                Ok(path) => path,
                Err(AgentError::Refused(refusal)) => {
                    self.reject(target.name.clone(), Some(target.clone()), refusal.clone()).await?;
                    return Err(AgentError::Refused(refusal));
                }
                Err(e) => return Err(e),
            };
        self.precondition(target, verified, fallback, opts).await
    }

    /// The assigned image built from a delta from the running image, when the image repository
    /// lists one and it works. Never an error of its own: whatever goes wrong (the delta does not
    /// verify, does not apply, or builds other bytes than the signed image) ends in the full
    /// image, with the reason in the attempt's detail. The built image is left where the full
    /// download would be (`staging/<sha256>.part`), so a later pass (the precondition said "not
    /// now") verifies it again instead of building it again.
    async fn try_delta(&mut self, target: &Assigned, opts: &InstallOptions) -> DeltaResult {
        let staging = self.state.staging();
        let staged = staging.join(format!("{}.part", target.sha256));
        if crate::download::file_len(&staged).await == target.length {
            return DeltaResult::Staged;
        }
        let Some(running) = opts.running_image.clone() else { return DeltaResult::None };
        let offers: Vec<_> = self.delta_offers.iter().filter(|o| o.target_sha256 == target.sha256).cloned().collect();
        // The running image is the first `source_length` bytes of the file or partition.
        let mut lengths: Vec<u64> = offers.iter().map(|o| o.source_length).collect();
        lengths.sort_unstable();
        lengths.dedup();
        let mut offer = None;
        for length in lengths {
            let path = running.clone();
            let hashed = tokio::task::spawn_blocking(move || crate::delta::sha256_prefix(&path, length)).await;
            let sha256 = match hashed {
                Ok(Ok(sha256)) => sha256,
                Ok(Err(e)) => {
                    return DeltaResult::Failed(format!("reading the running image {}: {e}", running.display()));
                }
                Err(e) => return DeltaResult::Failed(format!("hashing the running image: {e}")),
            };
            offer = offers.iter().find(|o| o.source_length == length && Some(&o.source_sha256) == sha256.as_ref());
            if offer.is_some() {
                break;
            }
        }
        let Some(offer) = offer.cloned() else { return DeltaResult::None };
        let delta = &offer.file;
        let fetched = match self.net.url("repo/targets/").and_then(|base| target_url(&base, delta)) {
            Ok(url) => fetch_verified(self.net.client(), self.source(&url), delta, &staging, self.tuning.retry).await,
            Err(e) => Err(e),
        };
        let delta_path = match fetched {
            Ok(path) => path,
            Err(e) => return DeltaResult::Failed(format!("the delta {} failed: {e}", delta.name)),
        };
        let out = staging.join(format!("{}.from-delta", target.sha256));
        let expected = SignedFile::from(target);
        let (from, to, algorithm, length) =
            (delta_path.clone(), out.clone(), offer.algorithm.clone(), offer.source_length);
        let applied = tokio::task::spawn_blocking(move || {
            let source = crate::delta::Source { path: &running, length };
            crate::delta::apply(&algorithm, &from, source, &to, &expected)
        })
        .await;
        drop(tokio::fs::remove_file(&delta_path).await);
        let failed = match applied {
            Ok(Ok(())) => match tokio::fs::rename(&out, &staged).await {
                Ok(()) => {
                    let how = format!(
                        "delta {} ({} bytes downloaded for a {}-byte image)",
                        delta.name, delta.length, target.length
                    );
                    return DeltaResult::Built(staged, how);
                }
                Err(e) => format!("the delta {}: staging the image it built: {e}", delta.name),
            },
            Ok(Err(why)) => format!("the delta {} did not build the signed image: {why}", delta.name),
            Err(e) => format!("applying the delta {}: {e}", delta.name),
        };
        drop(tokio::fs::remove_file(&out).await);
        DeltaResult::Failed(failed)
    }

    /// A target download from this device's server, with its token: the server counts the
    /// bytes toward the rollout that assigned the update.
    fn source<'a>(&'a self, url: &'a url::Url) -> Source<'a> {
        Source { url, token: Some(&self.token) }
    }

    /// Runs the precondition on a verified image in staging.
    async fn precondition(
        &mut self,
        target: Assigned,
        verified: PathBuf,
        path: String,
        opts: &InstallOptions,
    ) -> Result<Step, AgentError> {
        if let Some(pre) = &opts.precondition {
            let status = run_command(pre, None, &target).await.map_err(AgentError::Usage)?;
            if !status.success() {
                let detail = format!("downloaded and verified; waiting: the precondition said not now ({status})");
                self.set_attempt(attempt(&target, AttemptState::Downloading, Some(detail))).await?;
                return Ok(Step::Done(InstallOutcome::Waiting(target)));
            }
        }
        Ok(Step::Ready(Prepared { target, verified, path }))
    }

    /// Writing the slot, the hook, `awaiting_reboot`: never cancelled half-way.
    async fn commit(&mut self, prepared: Prepared, opts: &InstallOptions) -> Result<InstallOutcome, AgentError> {
        let Prepared { target, verified, path } = prepared;
        let how = Some(format!("from the {path}"));
        self.set_attempt(attempt(&target, AttemptState::Installing, how.clone())).await?;
        let slot = match tokio::fs::canonicalize(&opts.slot).await {
            Ok(real) => real,
            Err(_) => opts.slot.clone(),
        };
        if let Err(message) = write_slot(&verified, &slot, &target.sha256).await {
            return self.fail(&target, message).await;
        }
        if let Some(hook) = &opts.hook {
            match run_command(hook, Some(&slot), &target).await {
                Ok(status) if status.success() => {}
                Ok(status) => return self.fail(&target, format!("the install hook exited with {status}")).await,
                Err(message) => return self.fail(&target, format!("the install hook could not run: {message}")).await,
            }
        }
        self.set_attempt(attempt(&target, AttemptState::AwaitingReboot, how)).await?;
        // The image is in the slot: nothing staged is of use now (a delta that failed half-way
        // before the full image was downloaded, say).
        self.clear_other_staging(&[]).await;
        Ok(InstallOutcome::Installed(target))
    }

    /// Removes partial downloads of anything but the files whose sha256 is in `keep` (the
    /// assigned image and its deltas; an assignment that changed mid-way leaves others).
    async fn clear_other_staging(&self, keep: &[String]) {
        let Ok(mut entries) = tokio::fs::read_dir(self.state.staging()).await else { return };
        let keep: Vec<String> = keep.iter().map(|sha| format!("{sha}.part")).collect();
        while let Ok(Some(entry)) = entries.next_entry().await {
            if !keep.contains(&entry.file_name().to_string_lossy().into_owned()) {
                drop(tokio::fs::remove_file(entry.path()).await);
            }
        }
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
        // Nothing waits (a boot script calls this at every boot): nothing to do.
        let Some(target) = pending else { return Ok(ConfirmOutcome::Nothing) };
        if running != target.sha256 {
            return self
                .fail(
                    &target,
                    format!("after the reboot the device runs {running}, not the installed {}", target.sha256),
                )
                .await;
        }
        // The floor never goes down: "the lowest version a device may ever go back to".
        let floor = higher_floor(self.state.installed()?.map(|i| i.rollback_floor), &target.rollback_floor);
        let installed = InstalledRecord {
            name: target.name.clone(),
            sha256: target.sha256.clone(),
            version: target.version.clone(),
            rollback_floor: floor,
        };
        self.state.set_installed(Some(&installed))?;
        self.set_attempt(attempt(&target, AttemptState::Installed, None)).await?;
        Ok(ConfirmOutcome::Confirmed(installed))
    }

    /// `run`: polls until `stop` resolves, with the server's interval ±10 % jitter, exponential
    /// backoff on network errors, installing what verifies; returns the error when the server
    /// denies the device for good, or the state directory fails. Stops cleanly between steps; a
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
            let preparing = async {
                let outcome = self.poll_once(false).await?;
                self.prepare(outcome, opts, false).await
            };
            // A stop cancels polling and downloading (the download resumes next time), never
            // a slot write or a hook that has started.
            let prepared = tokio::select! {
                () = &mut stop => return Ok(()),
                prepared = preparing => prepared,
            };
            let result = match prepared {
                Ok(Step::Ready(prepared)) => self.commit(prepared, opts).await,
                Ok(Step::Done(outcome)) => Ok(outcome),
                Err(e) => Err(e),
            };
            on_event(&result);
            let wait = match &result {
                Err(AgentError::Network(_)) => {
                    failures = failures.saturating_add(1);
                    self.tuning.retry.delay(failures - 1).min(self.poll)
                }
                // Nothing this device can do about these by waiting: stop, with the reason.
                Err(AgentError::Local(_) | AgentError::Usage(_) | AgentError::Denied(_)) => return result.map(|_| ()),
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

#[cfg(test)]
mod tests {
    use super::higher_floor;

    #[test]
    fn the_rollback_floor_never_goes_down() {
        assert_eq!(higher_floor(Some("2.0.0".into()), "1.0.0"), "2.0.0");
        assert_eq!(higher_floor(Some("1.0.0".into()), "1.5.0"), "1.5.0");
        assert_eq!(higher_floor(None, "1.0.0"), "1.0.0");
        assert_eq!(higher_floor(Some("1.10.0".into()), "1.9.0"), "1.10.0", "semver, not text");
    }
}
