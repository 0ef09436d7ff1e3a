//! `patchgate keys generate`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::tuf::keydir;

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a complete key set (PKCS#8 PEM ed25519, mode 0600).
    Generate {
        /// Directory to write (`offline/` and `online/` inside).
        #[arg(long)]
        out: PathBuf,
        /// Number of image root keys.
        #[arg(long, default_value_t = 2)]
        root_keys: usize,
        /// Image root signatures required.
        #[arg(long, default_value_t = 2)]
        root_threshold: u64,
    },
}

/// Runs a key command.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { out, root_keys, root_threshold } => {
            let set = keydir::generate(&out, root_keys, root_threshold)?;
            println!("wrote a key set to {}", out.display());
            for (i, k) in set.image_root.iter().enumerate() {
                println!("  offline/image-root-{}.pem     {}", i + 1, k.keyid());
            }
            println!("  offline/image-targets.pem    {}", set.image_targets.keyid());
            println!("  offline/director-root.pem    {}", set.director_root.keyid());
            println!("  online/image-snapshot.pem    {}", set.image_snapshot.keyid());
            println!("  online/image-timestamp.pem   {}", set.image_timestamp.keyid());
            println!("  online/director.pem          {}", set.director.keyid());
            println!("image root threshold: {root_threshold} of {root_keys}");
            println!("keep offline/ on offline media; the server needs only online/ in production");
            Ok(())
        }
    }
}
