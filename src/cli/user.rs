//! `patchgate user create|set-role|set-password|list`: accounts for the admin UI. Passwords are
//! prompted without echo, or read from stdin (first line) for scripts with `--password-stdin`.

use std::io::BufRead;

use clap::Subcommand;

use crate::config::Config;
use crate::services::auth::{Caller, Role};
use crate::services::users::{create_user, list_users, set_user_password, set_user_role, unlock_user};

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user of the admin UI.
    Create {
        /// User name (a-z, 0-9, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// viewer | publisher | release-manager | admin
        #[arg(long)]
        role: String,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role (ends its sessions).
    SetRole {
        /// User name.
        #[arg(long)]
        name: String,
        /// viewer | publisher | release-manager | admin
        #[arg(long)]
        role: String,
    },
    /// Set a user's password (ends its sessions).
    SetPassword {
        /// User name.
        #[arg(long)]
        name: String,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Forget a user's failed sign-ins (lift a sign-in slowdown).
    Unlock {
        /// User name.
        #[arg(long)]
        name: String,
    },
    /// List users.
    List,
}

fn parse_role(role: &str) -> anyhow::Result<Role> {
    Role::parse(role)
        .ok_or_else(|| anyhow::anyhow!("--role must be viewer, publisher, release-manager or admin, not {role:?}"))
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let prompt = |question: &str| {
        rpassword::prompt_password(question).map_err(|e| {
            anyhow::anyhow!(
                "cannot ask for the password ({e}): there is no terminal here; pipe it in with --password-stdin"
            )
        })
    };
    let first = prompt("password: ")?;
    let again = prompt("again: ")?;
    anyhow::ensure!(first == again, "the two passwords differ");
    Ok(first)
}

/// Runs a user command.
pub async fn run(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let svc = super::local_services(config).await?;
    let actor = Caller::operator();
    match cmd {
        UserCommand::Create { name, role, password_stdin } => {
            let role = parse_role(&role)?;
            crate::services::users::check_user_name(&name)?;
            let password = read_password(password_stdin)?;
            create_user(&svc, &actor, &name, role, &password).await?;
            say!("created {role} user {name}");
        }
        UserCommand::SetRole { name, role } => {
            let role = parse_role(&role)?;
            let ended = set_user_role(&svc, &actor, &name, role).await?;
            say!("{name} is now {role}; {ended} session(s) ended");
        }
        UserCommand::SetPassword { name, password_stdin } => {
            let password = read_password(password_stdin)?;
            set_user_password(&svc, &actor, &name, &password).await?;
            say!("password of {name} changed; its sessions ended");
        }
        UserCommand::Unlock { name } => {
            unlock_user(&svc, &actor, &name).await?;
            say!("{name} may sign in again at once");
        }
        UserCommand::List => {
            for user in list_users(&svc).await? {
                say!("{}\t{}", user.name, user.role);
            }
        }
    }
    Ok(())
}
