//! The `patchgate` command line. Every command that touches local state reads the same
//! configuration as `serve`.

pub mod keys;
pub mod publish;
pub mod repo;
pub mod rollout;
pub mod token;
pub mod user;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::Config;

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
    /// Repository metadata: initialise, export and rotate roots.
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Users of the admin UI.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Releases (talks to a running server).
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
        Command::Release(cmd) => publish::run(cmd).await,
        Command::Rollout(cmd) => rollout::run(cmd).await,
        Command::Serve => {
            let config = load_config(cli.config.as_deref())?;
            let app = crate::startup::Application::build(config, Arc::new(SystemClock)).await?;
            app.run_until_stopped().await?;
            Ok(())
        }
        Command::Repo(cmd) => repo::run(load_config(cli.config.as_deref())?, cmd).await,
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
