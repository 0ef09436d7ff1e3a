//! `patchgate` as a separate process: a deployment (keys, data, database shared by every
//! command) and a running `patchgate serve`, for tests that must kill the server without
//! unwinding (`crash.rs`) or run it under process limits (`limits.rs`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::test_config;

/// A bound on start-up (migrations and repository initialisation in a debug build).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment every `patchgate` command of a test shares: same keys, data and database.
pub struct Deployment {
    /// Data, keys, logs.
    pub dir: TempDir,
    /// `PATCHGATE_*` variables of every command.
    pub vars: Vec<(&'static str, String)>,
}

impl Deployment {
    /// A fresh deployment (SQLite, or PostgreSQL when the suite runs on it).
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path()).await;
        let mut vars = vec![
            ("PATCHGATE_DATA_DIR", config.data_dir.display().to_string()),
            ("PATCHGATE_KEYS_DIR", config.keys_dir.display().to_string()),
            ("PATCHGATE_REFRESH_INTERVAL_SECONDS", "0".to_owned()),
        ];
        if let Some(url) = config.database_url {
            vars.push(("PATCHGATE_DATABASE_URL", url));
        }
        Self { dir, vars }
    }

    /// `patchgate args…` with only this deployment's `PATCHGATE_*` variables: an inherited
    /// `PATCHGATE_DATABASE_URL` or `PATCHGATE_STORE_URL` would point the server elsewhere.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_in(Command::new(env!("CARGO_BIN_EXE_patchgate")), args)
    }

    /// `cmd` (the binary, or a shell that runs it) with this deployment's environment.
    fn command_in(&self, mut cmd: Command, args: &[&str]) -> Command {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PATCHGATE_") {
                cmd.env_remove(key);
            }
        }
        // The temp directory holds no `patchgate.toml`, so none is picked up from the cwd.
        cmd.args(args).envs(self.vars.iter().map(|(k, v)| (k, v))).current_dir(self.dir.path());
        cmd
    }

    /// Starts `patchgate serve` and waits until `/healthz` answers 200.
    pub async fn start(&self, label: &str) -> Server {
        self.start_limited(label, None).await
    }

    /// [`Deployment::start`] with the open-file limit lowered to `open_files` (by the shell's
    /// `ulimit -n`, for the server process only).
    pub async fn start_limited(&self, label: &str, open_files: Option<u32>) -> Server {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        // A port picked by binding port 0 may be taken again before the server binds it; then
        // the server exits at once and another port is tried.
        for attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = self.dir.path().join(format!("server-{label}-{attempt}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let mut serve = match open_files {
                None => self.command(&["serve"]),
                Some(n) => {
                    let mut shell = Command::new("sh");
                    shell.args(["-c", "ulimit -n \"$1\" && exec \"$0\" serve"]);
                    shell.arg(env!("CARGO_BIN_EXE_patchgate")).arg(n.to_string());
                    self.command_in(shell, &[])
                }
            };
            let child = serve
                .env("PATCHGATE_LISTEN", format!("127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("starting patchgate serve");
            let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), log };
            let started = Instant::now();
            loop {
                if let Some(status) = server.child.try_wait().unwrap() {
                    eprintln!("server {label} exited during start-up ({status}):\n{}", server.log_tail());
                    break;
                }
                let health = client.get(format!("{}/healthz", server.base)).send().await;
                if health.is_ok_and(|r| r.status() == 200) {
                    return server;
                }
                assert!(
                    started.elapsed() < START_TIMEOUT,
                    "server {label} not healthy after {START_TIMEOUT:?}:\n{}",
                    server.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("server {label} did not start");
    }

    /// An admin token made by the CLI (the last line of its stdout).
    pub fn admin_token(&self) -> String {
        let out = self.command(&["token", "create", "--role", "admin", "--name", "crash"]).output().unwrap();
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_owned()
    }
}

/// A running server process; dropping it kills it, so a failing test leaves none behind.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Server {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- log of the server at {} ({}):\n{}", self.base, self.log.display(), self.log_tail());
        }
    }
}
