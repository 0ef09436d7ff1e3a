//! The `patchgate-agent` command line. Exit codes (README): 0 done or nothing to do, 1 local
//! error (state directory), 2 usage, 3 refused for security, 4 network or server, 5 install
//! failed (hook, slot or the wrong image after the reboot), 6 denied by the server for good.
//!
//! Results go to stdout as one JSON object; messages and progress go to stderr. Must stay a thin
//! layer over [`crate::Agent`] and [`crate::simulate`].

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::agent::{
    Agent, CheckJson, CheckOutcome, ConfirmOutcome, EnrollOptions, InstallOptions, InstallOutcome, Tuning,
};
use crate::error::AgentError;
use crate::simulate::{Fleet, SimOptions, Until};

/// What each exit status means (the README's table).
const EXIT_CODES: &str = "Exit codes:
  0  done, or nothing to do
  1  local error: the state directory cannot be read or written
  2  usage: bad arguments, or a state directory that was never enrolled
  3  refused for security (the reason is printed and reported to the server as rejected)
  4  network or server error (retry later; never reported as a failure)
  5  install failed: the hook, writing the slot, or the wrong image running after the reboot
  6  denied by the server for good: a revoked or wrong token, a decommissioned or unknown
     device, another key's signature (asking again will not help; `run` stops)";

/// patchgate device agent: installs only what the manufacturer signed and the director assigned.
#[derive(Debug, Parser)]
#[command(name = "patchgate-agent", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this device (generates its key on first use) and save the state directory.
    Enroll {
        /// Server base URL (https, or http on loopback).
        #[arg(long)]
        server: String,
        /// Enrollment token from an admin.
        #[arg(long, env = "PATCHGATE_ENROLLMENT_TOKEN", hide_env_values = true)]
        enrollment_token: String,
        /// This device's id.
        #[arg(long)]
        device_id: String,
        /// Its product.
        #[arg(long)]
        product: String,
        /// Its hardware id.
        #[arg(long)]
        hardware_id: String,
        /// The image repository root.json the device was provisioned with.
        #[arg(long)]
        image_root: PathBuf,
        /// The director root.json the device was provisioned with.
        #[arg(long)]
        director_root: PathBuf,
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// PEM CA certificates to trust (only these) for the server.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Accept roots that trust the public development keys (tests and demos only).
        #[arg(long)]
        allow_dev_keys: bool,
        /// SHA-256 of the image the device runs now, if the image repository lists it: its
        /// version and rollback floor then guard the first update too.
        #[arg(long)]
        running_sha256: Option<String>,
    },
    /// Report, verify, and print the assigned target as JSON (or null).
    Check {
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Verify, download, write the slot (then run the hook), report awaiting_reboot.
    Install {
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
        #[command(flatten)]
        install: InstallArgs,
    },
    /// After the reboot: report installed if the running image is the installed target.
    Confirm {
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// SHA-256 of the image the device now runs.
        #[arg(long)]
        running_sha256: String,
    },
    /// Poll, verify and install until SIGTERM or Ctrl-C.
    Run {
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
        #[command(flatten)]
        install: InstallArgs,
    },
    /// Run N virtual devices against a server and print what happened.
    Simulate {
        /// Server base URL.
        #[arg(long)]
        server: String,
        /// Enrollment token with at least N uses.
        #[arg(long, env = "PATCHGATE_ENROLLMENT_TOKEN", hide_env_values = true)]
        enrollment_token: String,
        /// Image repository root.json.
        #[arg(long)]
        image_root: PathBuf,
        /// Director root.json.
        #[arg(long)]
        director_root: PathBuf,
        /// Number of devices.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Product.
        #[arg(long)]
        product: String,
        /// Hardware id of the simulated devices (default: the first of the product's newest
        /// release, read from the image repository).
        #[arg(long)]
        hardware_id: Option<String>,
        /// Fraction of installs that come back from the reboot running the wrong image.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Seconds between a device's polls.
        #[arg(long, default_value_t = 5.0)]
        interval: f64,
        /// Seconds to run.
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Device ids are PREFIX-00000, PREFIX-00001, …
        #[arg(long, default_value = "sim")]
        id_prefix: String,
        /// Most polls in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Accept roots that trust the public development keys.
        #[arg(long)]
        allow_dev_keys: bool,
    },
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// The install slot (the verified image is written here).
    #[arg(long)]
    slot: PathBuf,
    /// Program and arguments run after the slot is written, with the slot path appended (no
    /// shell). End its arguments with `\;` when other options follow.
    #[arg(long, num_args = 1.., value_terminator = ";", allow_hyphen_values = true)]
    hook: Option<Vec<String>>,
    /// Program and arguments that must exit 0 before the slot is touched. End with `\;` when
    /// other options follow.
    #[arg(long, num_args = 1.., value_terminator = ";", allow_hyphen_values = true)]
    precondition: Option<Vec<String>>,
    /// The image the device runs now (a file or partition, read only): when the image
    /// repository lists a delta from it to the assigned release, the agent downloads the delta
    /// and builds the new image from it, falling back to the full image on any failure.
    #[arg(long)]
    running_image: Option<PathBuf>,
}

impl InstallArgs {
    fn options(self) -> InstallOptions {
        InstallOptions {
            slot: self.slot,
            hook: self.hook,
            precondition: self.precondition,
            running_image: self.running_image,
        }
    }
}

/// The binary's entry point.
pub fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("patchgate-agent: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(std::env::args_os(), &mut std::io::stdout()));
    std::process::ExitCode::from(code)
}

/// Runs the command line `args` (program name first), writing results to `out` and messages to
/// stderr; returns the exit code.
pub async fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>, out: &mut (dyn Write + Send)) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            drop(e.print());
            return code;
        }
    };
    match execute(cli.command, out).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("patchgate-agent: {e}");
            e.exit_code()
        }
    }
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, AgentError> {
    std::fs::read(path).map_err(|e| AgentError::Usage(format!("{flag} {}: {e}", path.display())))
}

fn print(out: &mut (dyn Write + Send), value: serde_json::Value) -> Result<(), AgentError> {
    writeln!(out, "{value}").map_err(|e| AgentError::local("writing to stdout", e))
}

async fn execute(command: Command, out: &mut (dyn Write + Send)) -> Result<(), AgentError> {
    match command {
        Command::Enroll {
            server,
            enrollment_token,
            device_id,
            product,
            hardware_id,
            image_root,
            director_root,
            state_dir,
            ca_file,
            allow_dev_keys,
            running_sha256,
        } => {
            let opts = EnrollOptions {
                image_root: read_file("--image-root", &image_root)?,
                director_root: read_file("--director-root", &director_root)?,
                server,
                enrollment_token,
                device_id,
                product,
                hardware_id,
                state_dir,
                ca_file,
                allow_dev_keys,
                running_sha256,
            };
            let agent = Agent::enroll(opts, None).await?;
            let config = agent.config();
            print(
                out,
                json!({"enrolled": config.device_id, "product": config.product, "state_dir": agent.state().path()}),
            )
        }
        Command::Check { state_dir } => {
            let mut agent = Agent::open(&state_dir, None, Tuning::default())?;
            let value = match agent.check().await? {
                CheckOutcome::Nothing => serde_json::Value::Null,
                CheckOutcome::Assigned(t) => json!(CheckJson::of(&t, false)),
                CheckOutcome::AwaitingReboot(t) => json!(CheckJson::of(&t, true)),
            };
            print(out, value)
        }
        Command::Install { state_dir, install } => {
            let mut agent = Agent::open(&state_dir, None, Tuning::default())?;
            let outcome = agent.install(&install.options()).await?;
            print(out, install_json(&outcome))
        }
        Command::Confirm { state_dir, running_sha256 } => {
            let mut agent = Agent::open(&state_dir, None, Tuning::default())?;
            match agent.confirm(&running_sha256).await? {
                ConfirmOutcome::Confirmed(i) => print(
                    out,
                    json!({"outcome": "installed", "name": i.name, "version": i.version, "sha256": i.sha256}),
                ),
                ConfirmOutcome::Nothing => print(out, json!({"outcome": "nothing"})),
            }
        }
        Command::Run { state_dir, install } => {
            let mut agent = Agent::open(&state_dir, None, Tuning::default())?;
            eprintln!("patchgate-agent: polling as {} (stop with SIGTERM or Ctrl-C)", agent.config().device_id);
            agent
                .run(&install.options(), stop_signal(), |event| match event {
                    Ok(outcome) => eprintln!("patchgate-agent: {}", install_json(outcome)),
                    Err(e) => eprintln!("patchgate-agent: {e}"),
                })
                .await?;
            eprintln!("patchgate-agent: stopped");
            Ok(())
        }
        Command::Simulate {
            server,
            enrollment_token,
            image_root,
            director_root,
            devices,
            product,
            hardware_id,
            fail_rate,
            interval,
            duration,
            id_prefix,
            concurrency,
            allow_dev_keys,
        } => {
            if !(0.0..=1.0).contains(&fail_rate) {
                return Err(AgentError::Usage(format!("--fail-rate {fail_rate} must be between 0 and 1")));
            }
            let secs = |flag: &str, v: f64| {
                Duration::try_from_secs_f64(v)
                    .map_err(|_| AgentError::Usage(format!("{flag} {v} is not a duration in seconds")))
            };
            let image_root = read_file("--image-root", &image_root)?;
            let hardware_id = match hardware_id {
                Some(h) => h,
                None => crate::simulate::discover_hardware_id(&server, &image_root, &product).await?,
            };
            let opts = SimOptions {
                server,
                enrollment_token,
                image_root,
                director_root: read_file("--director-root", &director_root)?,
                devices,
                product,
                hardware_id,
                id_prefix,
                fail_rate,
                interval: secs("--interval", interval)?,
                allow_dev_keys,
                state_root: None,
                max_in_flight: concurrency,
            };
            let duration = secs("--duration", duration)?;
            eprintln!("enrolling {devices} devices…");
            let mut fleet = Fleet::enroll(opts, |n| {
                if n % 100 == 0 || n == devices {
                    eprintln!("  enrolled {n}/{devices}");
                }
            })
            .await?;
            let summary = fleet
                .run(Until::Elapsed(duration), |s| {
                    eprintln!(
                        "[{:>4.0}s] polls {} · installs {} · failures {} · rejections {} · errors {}",
                        s.elapsed.as_secs_f64(),
                        s.polls,
                        s.installs,
                        s.failures,
                        s.rejections,
                        s.errors
                    );
                })
                .await;
            write!(out, "{}", summary.table()).map_err(|e| AgentError::local("writing to stdout", e))
        }
    }
}

fn install_json(outcome: &InstallOutcome) -> serde_json::Value {
    let (name, target) = match outcome {
        InstallOutcome::Nothing => return json!({"outcome": "nothing"}),
        InstallOutcome::Installed(t) => ("awaiting_reboot", t),
        InstallOutcome::AwaitingReboot(t) => ("already_awaiting_reboot", t),
        InstallOutcome::Waiting(t) => ("waiting", t),
        InstallOutcome::FailedBefore(t) => ("failed_before", t),
    };
    json!({"outcome": name, "target": CheckJson::of(target, matches!(outcome, InstallOutcome::Installed(_) | InstallOutcome::AwaitingReboot(_)))})
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        drop(tokio::signal::ctrl_c().await);
    };
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                () = ctrl_c => {}
            }
        }
        Err(_) => ctrl_c.await,
    }
}
