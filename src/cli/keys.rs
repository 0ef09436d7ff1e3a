//! `patchgate keys generate|new|show`: key files are made and read locally, never sent anywhere.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::tuf::keydir;
use crate::tuf::keys::Signer;

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a complete key set (PKCS#8 PEM ed25519, mode 0600), or with --product one
    /// product key for the manufacturer's CI.
    Generate {
        /// Directory to write (`offline/` and `online/` inside); with --product, the key file
        /// (default `PRODUCT.pem`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Generate only the key of this product (kept by the manufacturer, never uploaded).
        #[arg(long)]
        product: Option<String>,
        /// Number of image root keys.
        #[arg(long, default_value_t = 2)]
        root_keys: usize,
        /// Image root signatures required.
        #[arg(long, default_value_t = 2)]
        root_threshold: u64,
    },
    /// Generate one key (a root key holder's, or the next online key of a rotation): as a file,
    /// or inside a PKCS#11 token (an HSM), where it is created sensitive and never extractable.
    New {
        /// The key file to write (never overwritten).
        #[arg(long, required_unless_present = "pkcs11", conflicts_with = "pkcs11")]
        out: Option<PathBuf>,
        /// A PKCS#11 URI naming the token and the new key's label
        /// (`pkcs11:token=…;object=…?module-path=…&pin-source=…`); refused if the label is taken.
        #[arg(long)]
        pkcs11: Option<String>,
    },
    /// Print a key's TUF key id and public key (hex), which ceremonies and product creation
    /// take: of a key file, or of a key in a PKCS#11 token.
    Show {
        /// The key file.
        #[arg(required_unless_present = "pkcs11", conflicts_with = "pkcs11")]
        file: Option<PathBuf>,
        /// A PKCS#11 URI naming the key.
        #[arg(long)]
        pkcs11: Option<String>,
    },
}

/// Where `key` is (its file, or its token and whether the private key can leave it), then its
/// key id and public key.
fn print_key(file: Option<&std::path::Path>, key: &Signer) {
    if let Some(path) = file {
        say!("key file:   {}", path.display());
    }
    if let Some(token) = key.token_key() {
        say!("pkcs11:     {}", token.uri());
        match token.private_key_sealed() {
            Ok(true) => say!("private:    sensitive and never extractable: it cannot leave the token"),
            Ok(false) => say!(
                "private:    WARNING: the token would let this private key be read out (CKA_SENSITIVE off or CKA_EXTRACTABLE on)"
            ),
            Err(e) => say!("private:    cannot read its attributes: {e}"),
        }
    }
    say!("keyid:      {}", key.keyid());
    say!("public_key: {}", hex::encode(key.public_bytes()));
}

fn new_token_key(uri: &str) -> anyhow::Result<Signer> {
    let uri: crate::tuf::pkcs11::KeyUri = uri.parse()?;
    Ok(Signer::hsm(std::sync::Arc::new(crate::tuf::pkcs11::HsmKey::generate(&uri)?)))
}

/// Runs a key command.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { out, product: Some(product), .. } => {
            crate::domain::names::ProductName::parse(&product)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{product}.pem")));
            let key = Signer::generate();
            key.write(&out)?;
            print_key(Some(&out), &key);
            say!(
                "keep it in your CI's secret store; create the product with `patchgate product create --key {}`",
                out.display()
            );
            Ok(())
        }
        KeysCommand::Generate { out, product: None, root_keys, root_threshold } => {
            let out = out.context("--out DIR is required")?;
            let set = keydir::generate(&out, root_keys, root_threshold)?;
            say!("wrote a key set to {}", out.display());
            for (file, k) in set.image_root_files.iter().zip(&set.image_root) {
                say!("  offline/{file:<21}{}", k.keyid());
            }
            for (file, key) in [("image-targets.pem", &set.image_targets), ("director-root.pem", &set.director_root)] {
                if let Some(key) = key {
                    say!("  offline/{file:<21}{}", key.keyid());
                }
            }
            say!("  online/image-snapshot.pem    {}", set.image_snapshot.keyid());
            say!("  online/image-timestamp.pem   {}", set.image_timestamp.keyid());
            say!("  online/director.pem          {}", set.director.keyid());
            say!("image root threshold: {root_threshold} of {root_keys}");
            say!(
                "after `patchgate repo init`, move offline/ to the key holders: the server refuses to start while it can read it"
            );
            Ok(())
        }
        KeysCommand::New { pkcs11: Some(uri), .. } => {
            let key = new_token_key(&uri)?;
            print_key(None, &key);
            say!(
                "to sign an online role with it: name it in pkcs11_keys (README \"Online keys in an HSM\"), and make a root that lists this keyid"
            );
            Ok(())
        }
        KeysCommand::New { out, pkcs11: None } => {
            let out = out.context("--out FILE or --pkcs11 URI is required")?;
            let key = Signer::generate();
            key.write(&out)?;
            print_key(Some(&out), &key);
            Ok(())
        }
        KeysCommand::Show { pkcs11: Some(uri), .. } => {
            print_key(None, &crate::cli::product::token_key(&uri)?);
            Ok(())
        }
        KeysCommand::Show { file, pkcs11: None } => {
            let file = file.context("a key FILE or --pkcs11 URI is required")?;
            let key = Signer::load(&file)?;
            print_key(Some(&file), &key);
            Ok(())
        }
    }
}
