//! ed25519 signing keys, signing through tough's `Sign` trait: a PKCS#8 PEM file read into memory
//! (`Signer::load`), or a key that never leaves a PKCS#11 token (`Signer::hsm`, [`super::pkcs11`]).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use tough::schema::key::{Ed25519Key, Ed25519Scheme, Key};
use tough::sign::Sign;

/// A key file that could not be read or written. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a PKCS#8 PEM ed25519 private key.
    #[error("key file {path} is not a PKCS#8 PEM ed25519 private key")]
    Format {
        /// The key file.
        path: PathBuf,
    },
    /// Refusing to overwrite an existing key.
    #[error("key file {0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// The key lives in a PKCS#11 token and has no file form.
    #[error("key {keyid} is held by a PKCS#11 token and cannot be written to {path}")]
    InToken {
        /// The key.
        keyid: String,
        /// Where it was to be written.
        path: PathBuf,
    },
}

/// Where a key's private half is.
#[derive(Clone)]
enum Source {
    /// In this process's memory, read from a file or generated (shared: signers are cloned
    /// wherever a role is signed).
    Memory(Arc<SigningKey>),
    /// In a PKCS#11 token; this process only asks it to sign.
    Token(Arc<super::pkcs11::HsmKey>),
}

/// An ed25519 signing key with its TUF key id. `Debug` shows the key id only.
#[derive(Clone)]
pub struct Signer {
    source: Source,
    public: [u8; 32],
    keyid: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("keyid", &self.keyid).finish_non_exhaustive()
    }
}

/// The TUF key object for a raw ed25519 public key.
pub fn tuf_public_key(public: &[u8; 32]) -> Key {
    Key::Ed25519 {
        keyval: Ed25519Key { public: public.to_vec().into(), _extra: Default::default() },
        scheme: Ed25519Scheme::Ed25519,
        _extra: Default::default(),
    }
}

/// The TUF key id (sha256 of the canonical key object), lowercase hex.
pub fn key_id(key: &Key) -> String {
    // Serialising a key object cannot fail: it holds only strings.
    key.key_id().map(|id| hex::encode(id.as_ref())).unwrap_or_default()
}

impl Signer {
    /// Wraps a signing key.
    pub fn new(key: SigningKey) -> Self {
        let public = key.verifying_key().to_bytes();
        Self { source: Source::Memory(Arc::new(key)), public, keyid: key_id(&tuf_public_key(&public)) }
    }

    /// A key held by a PKCS#11 token.
    pub fn hsm(key: Arc<super::pkcs11::HsmKey>) -> Self {
        let public = key.public_bytes();
        Self { source: Source::Token(key), public, keyid: key_id(&tuf_public_key(&public)) }
    }

    /// The token holding this key, if a token does.
    pub fn token_key(&self) -> Option<&super::pkcs11::HsmKey> {
        match &self.source {
            Source::Memory(_) => None,
            Source::Token(key) => Some(key),
        }
    }

    /// How many signatures with this key are worth running at once, when that is not the
    /// number of cores: a key in a token waits on the token (milliseconds, for a network
    /// HSM), not on this machine's CPUs, and signs through that many sessions in parallel.
    pub fn concurrency(&self) -> Option<usize> {
        match &self.source {
            Source::Memory(_) => None,
            Source::Token(key) => Some(key.sessions()),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::new(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Reads a PKCS#8 PEM key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Format { path: path.to_owned() })?;
        Ok(Self::new(key))
    }

    /// Writes the key as PKCS#8 PEM with mode 0600, never overwriting an existing file.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let Source::Memory(key) = &self.source else {
            return Err(KeyError::InToken { keyid: self.keyid.clone(), path: path.to_owned() });
        };
        let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|_| KeyError::Format { path: path.to_owned() })?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_owned())
            } else {
                KeyError::Io { path: path.to_owned(), source }
            }
        })?;
        file.write_all(pem.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// The TUF key id, lowercase hex.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// The raw 32-byte public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public
    }

    /// The public key as a TUF key object.
    pub fn public_key(&self) -> Key {
        tuf_public_key(&self.public_bytes())
    }
}

#[tough::async_trait]
impl Sign for Signer {
    fn tuf_key(&self) -> Key {
        self.public_key()
    }

    async fn sign(
        &self,
        msg: &[u8],
        _rng: &(dyn aws_lc_rs::rand::SecureRandom + Sync),
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        use ed25519_dalek::Signer as _;
        match &self.source {
            Source::Memory(key) => Ok(key.sign(msg).to_bytes().to_vec()),
            // A token may take milliseconds (a network HSM, longer): off the async workers.
            Source::Token(key) => {
                let (key, msg) = (Arc::clone(key), msg.to_vec());
                let sig = tokio::task::spawn_blocking(move || key.sign(&msg)).await??;
                Ok(sig.to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key_id_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let signer = Signer::generate();
        signer.write(&path).unwrap();
        let back = Signer::load(&path).unwrap();
        assert_eq!(back.keyid(), signer.keyid());
        assert_eq!(back.keyid().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(matches!(signer.write(&path), Err(KeyError::Exists(_))));
    }

    #[test]
    fn a_non_key_file_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "hello").unwrap();
        assert!(matches!(Signer::load(&path), Err(KeyError::Format { .. })));
    }
}
