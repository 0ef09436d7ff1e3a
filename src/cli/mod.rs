//! The `patchgate` command line. Every command that touches local state reads the same
//! configuration as `serve`; commands that talk to a running server (`release`, `rollout`,
//! `product`, `repo prepare|submit`) reach it through [`Remote`], and `repo sign` needs neither.

/// `println!` for a command's output: a reader that went away (`patchgate … | head`) ends the
/// command quietly, with the status a shell reports for SIGPIPE, as other Unix tools do, where
/// `println!` would panic.
macro_rules! say {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for a command's output (see [`say!`]).
macro_rules! say_raw {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

pub mod ceremony;
pub mod keys;
pub mod product;
pub mod publish;
pub mod repo;
pub mod rollout;
pub mod token;
pub mod user;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::Config;

/// Writes `args` to stdout (see [`say!`]): exits 141 if the reader went away, 1 on any other
/// write error.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing the output: {e}");
        std::process::exit(1);
    }
}

/// patchgate: OTA updates that only the manufacturer can sign.
#[derive(Debug, Parser)]
#[command(name = "patchgate", version, about)]
pub struct Cli {
    /// Configuration file (default: ./patchgate.toml if present; also PATCHGATE_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Repository metadata: initialise, export and rotate roots locally; prepare, sign and
    /// submit key ceremonies.
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Users of the admin UI.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Products and their manufacturer-held keys (talks to a running server).
    #[command(subcommand)]
    Product(product::ProductCommand),
    /// Releases: publish, yank, approve (talks to a running server).
    #[command(subcommand)]
    Release(publish::ReleaseCommand),
    /// Rollouts: create, steer and watch them (talks to a running server).
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::Product(cmd) => product::run(cmd).await,
        Command::Release(cmd) => publish::run(cmd).await,
        Command::Rollout(cmd) => rollout::run(cmd).await,
        Command::Serve => {
            let config = load_config(cli.config.as_deref())?;
            let app = crate::startup::Application::build(config, Arc::new(SystemClock)).await?;
            app.stop_on_signals();
            app.run_until_stopped().await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Repo(cmd) => repo::run(cli.config.as_deref(), cmd).await,
        Command::Token(cmd) => token::run(load_config(cli.config.as_deref())?, cmd).await,
        Command::User(cmd) => user::run(load_config(cli.config.as_deref())?, cmd).await,
    }
}

fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = Config::load(file)?;
    crate::telemetry::init_logging(config.log_format);
    Ok(config)
}

/// Services for a command that works on local state.
pub async fn local_services(config: Config) -> anyhow::Result<crate::services::Services> {
    crate::startup::build_services(config, Arc::new(SystemClock)).await
}

/// Where the server is and who is asking, for commands that need a token.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server URL, e.g. http://127.0.0.1:8080 (or PATCHGATE_SERVER).
    #[arg(long, env = "PATCHGATE_SERVER")]
    pub server: String,
    /// An API token with the role the command needs (or PATCHGATE_TOKEN).
    #[arg(long, env = "PATCHGATE_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl ServerArgs {
    /// A client for this server with this token.
    pub fn remote(&self) -> anyhow::Result<Remote> {
        Remote::new(&self.server, Some(&self.token))
    }
}

/// The server's refusal of a request: its HTTP status and `{"error", "message"}` body.
#[derive(Debug, thiserror::Error)]
#[error("the server refused ({status}, {code}): {message}")]
pub struct Refusal {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// The stable `snake_case` error code.
    pub code: String,
    /// The human message.
    pub message: String,
}

/// Whether `err` is the server's refusal with error code `code`.
pub fn is_refusal(err: &anyhow::Error, code: &str) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<Refusal>()).any(|r| r.code == code)
}

/// The next step for an error a user can act on, printed after it as `hint: …`: each names
/// what to check or run. `None` when the error's own message already says it (a refused
/// version, a conflict) or there is nothing a user can do.
pub fn next_step(err: &anyhow::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    err.chain().find_map(|cause| {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return refusal_step(refusal.status);
        }
        if let Some(e) = cause.downcast_ref::<reqwest::Error>() {
            if e.is_connect() || e.is_timeout() {
                return Some("is the server running, and is --server (or PATCHGATE_SERVER) its address?");
            }
            if e.is_status() {
                return e.status().and_then(refusal_step);
            }
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return match e.kind() {
                ErrorKind::NotFound => Some("check the path: it is relative to the directory you run the command in"),
                ErrorKind::PermissionDenied => Some("check the file's owner and mode, or run as the user that owns it"),
                _ => None,
            };
        }
        if cause.downcast_ref::<sea_orm::DbErr>().is_some() {
            return Some(
                "check database_url (PATCHGATE_DATABASE_URL, or --config FILE): run the command where the \
                 server runs, with the same configuration",
            );
        }
        None
    })
}

fn refusal_step(status: reqwest::StatusCode) -> Option<&'static str> {
    use reqwest::StatusCode as S;
    match status {
        S::UNAUTHORIZED => Some(
            "give a valid token with --token (or PATCHGATE_TOKEN); `patchgate token create` on the server's host makes one",
        ),
        S::FORBIDDEN => Some(
            "this token's role may not do this: use a token of a role that may (`patchgate token create --role …`)",
        ),
        S::NOT_FOUND => Some("check the names in the command: the server has nothing by that name"),
        S::PAYLOAD_TOO_LARGE => Some("the server's max_upload_bytes is smaller than this file: raise it on the server"),
        S::TOO_MANY_REQUESTS | S::SERVICE_UNAVAILABLE => Some("wait a moment and run the command again"),
        s if s.is_server_error() => Some("the server failed: its log says why, at the time of this request"),
        _ => None,
    }
}

/// A running patchgate server, reached over HTTP.
#[derive(Debug, Clone)]
pub struct Remote {
    base: url::Url,
    token: Option<String>,
    client: reqwest::Client,
}

impl Remote {
    /// A client for `server` (a base URL), sending `token` as a bearer token when given.
    pub fn new(server: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let base = url::Url::parse(server.trim_end_matches('/'))
            .with_context(|| format!("--server {server:?} is not a URL"))?;
        if base.cannot_be_a_base() {
            anyhow::bail!("--server {server:?} cannot take a path");
        }
        Ok(Self { base, token: token.map(str::to_owned), client: reqwest::Client::new() })
    }

    /// The URL of `segments` under the server's base, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request to `/api/v1/{segments…}`, with the token when there is one.
    pub fn api(&self, method: reqwest::Method, segments: &[&str]) -> reqwest::RequestBuilder {
        self.api_query(method, segments, &[])
    }

    /// [`Remote::api`] with query parameters (percent-encoded).
    pub fn api_query(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> reqwest::RequestBuilder {
        let mut path = vec!["api", "v1"];
        path.extend_from_slice(segments);
        let mut url = self.url(&path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = self.client.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A plain GET of a path outside the API (public TUF metadata).
    pub fn get_public(&self, segments: &[&str]) -> reqwest::RequestBuilder {
        self.client.get(self.url(segments))
    }

    /// Sends `request` and returns the answer's bytes; a non-success answer becomes a
    /// [`Refusal`] (or an error quoting the body when it is not the server's error JSON).
    pub async fn send_bytes(&self, request: reqwest::RequestBuilder) -> anyhow::Result<bytes::Bytes> {
        Ok(self.send(request).await?.1)
    }

    /// [`Remote::send_bytes`], with the success status (`201 Created` or `200 OK`).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(reqwest::StatusCode, bytes::Bytes)> {
        let request = request.build().context("building the request")?;
        let url = request.url().clone();
        let response = self.client.execute(request).await.with_context(|| format!("sending to {url}"))?;
        let status = response.status();
        let body = response.bytes().await.with_context(|| format!("reading the answer from {url}"))?;
        if status.is_success() {
            return Ok((status, body));
        }
        let refusal = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| {
            Some(Refusal {
                status,
                code: v.get("error")?.as_str()?.to_owned(),
                message: v.get("message")?.as_str()?.to_owned(),
            })
        });
        match refusal {
            Some(refusal) => Err(refusal.into()),
            None => anyhow::bail!("{url} answered {status}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// [`Remote::send_bytes`], then parses the answer as JSON.
    pub async fn send_json(&self, request: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
        let body = self.send_bytes(request).await?;
        serde_json::from_slice(&body).context("the server's answer is not JSON")
    }
}
