//! `patchgate token create|revoke`.

use clap::Subcommand;

use crate::config::Config;
use crate::domain::names::ProductName;
use crate::services::auth::{Caller, Role, create_token, revoke_token};

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is printed once, as the last line of stdout.
    Create {
        /// viewer | publisher | release-manager | admin
        #[arg(long)]
        role: String,
        /// Restrict the token to one product.
        #[arg(long)]
        product: Option<String>,
        /// A name for the audit log.
        #[arg(long)]
        name: String,
    },
    /// Revoke the tokens with this name (or token prefix).
    Revoke {
        /// Token name or prefix.
        name: String,
    },
}

/// Runs a token command.
pub async fn run(config: Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let svc = super::local_services(config).await?;
    let actor = Caller::operator();
    match cmd {
        TokenCommand::Create { role, product, name } => {
            let role = Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("--role must be viewer, publisher, release-manager or admin, not {role:?}")
            })?;
            let product = product.as_deref().map(ProductName::parse).transpose()?;
            let secret = create_token(&svc, &actor, &name, role, product.as_ref()).await?;
            eprintln!("created {role} token {name:?}; it is shown once:");
            say!("{secret}");
        }
        TokenCommand::Revoke { name } => {
            let count = revoke_token(&svc, &actor, &name).await?;
            say!("revoked {count} token(s) named {name:?}");
        }
    }
    Ok(())
}
