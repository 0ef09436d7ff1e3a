//! The keys directory: which file holds which key, generating a full set, loading it.
//!
//! ```text
//! KEYS/
//!   keyset.json                 {"image_root_threshold": T}
//!   offline/image-root-1.pem …  image root keys (threshold T)
//!   offline/image-targets.pem   image top-level targets
//!   offline/director-root.pem   director root
//!   online/image-snapshot.pem   image snapshot
//!   online/image-timestamp.pem  image timestamp
//!   online/director.pem         director targets, snapshot and timestamp
//!   online/*.pem                any further online keys (a rotation's next key)
//! ```
//!
//! In production `offline/` is not on the server at all (the server refuses to start when it
//! can read a non-development root or top-level targets key): root and delegation changes are
//! ceremonies. For each online role the server signs with whichever of its online keys the
//! current root trusts, so a key rotation is: put the new key in `online/`, then land the
//! root ceremony that names it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys::{KeyError, Signer};

/// The key set's own settings, kept beside the keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetInfo {
    /// Signatures of image root keys a root needs.
    pub image_root_threshold: u64,
}

/// Errors reading or generating a key directory.
#[derive(Debug, thiserror::Error)]
pub enum KeyDirError {
    /// A key file failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Listing or writing the directory failed.
    #[error("keys directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `keyset.json` is missing or malformed.
    #[error("keys directory {path}: keyset.json: {message}")]
    Info {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Bad generation parameters.
    #[error("{0}")]
    Parameters(String),
    /// A role's key is configured in a PKCS#11 token and also present as a file.
    #[error(
        "{role}: pkcs11_keys names a token key and {path} exists too; remove the file (its private key should not be on this server) or the pkcs11_keys entry"
    )]
    TokenAndFile {
        /// The online role's file stem (`image-timestamp`…).
        role: String,
        /// The file.
        path: PathBuf,
    },
    /// A PKCS#11 key was configured under a name no online key may have.
    #[error("pkcs11_keys.{0}")]
    NotOnline(String),
    /// An offline key is needed and not here.
    #[error(
        "{0} key is offline (not in this keys directory): that change is a key ceremony (`patchgate repo prepare`)"
    )]
    Offline(&'static str),
}

/// Every key the server can read from a keys directory.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// Image root keys, in file order (empty when they are offline).
    pub image_root: Vec<Signer>,
    /// Their files' names in `offline/`, in the same order.
    pub image_root_files: Vec<String>,
    /// Image root threshold.
    pub image_root_threshold: u64,
    /// Image top-level targets key (`None` when it is offline).
    pub image_targets: Option<Signer>,
    /// Image snapshot key (online).
    pub image_snapshot: Signer,
    /// Image timestamp key (online).
    pub image_timestamp: Signer,
    /// Director root key (`None` when it is offline).
    pub director_root: Option<Signer>,
    /// Director online key.
    pub director: Signer,
    /// Every other `online/*.pem`: keys a root ceremony may make current.
    pub online_extra: Vec<Signer>,
}

impl KeySet {
    /// The online keys: the three named files first, then the others.
    pub fn online(&self) -> impl Iterator<Item = &Signer> {
        [&self.image_snapshot, &self.image_timestamp, &self.director].into_iter().chain(self.online_extra.iter())
    }

    /// The first online key (the named one first) whose key id `trusted` accepts.
    pub fn online_trusted<'a>(&'a self, preferred: &'a Signer, trusted: impl Fn(&str) -> bool) -> Option<&'a Signer> {
        std::iter::once(preferred).chain(self.online()).find(|k| trusted(k.keyid()))
    }

    /// Every key of the set that is present.
    pub fn all(&self) -> impl Iterator<Item = &Signer> {
        self.image_root
            .iter()
            .chain(self.image_targets.as_ref())
            .chain(self.director_root.as_ref())
            .chain(self.online())
    }

    /// Files of offline keys this set holds (root, top-level targets, director root), with
    /// their key ids.
    pub fn offline_keys(&self) -> Vec<(String, &Signer)> {
        let mut out: Vec<(String, &Signer)> =
            self.image_root_files.iter().map(|f| format!("offline/{f}")).zip(&self.image_root).collect();
        out.extend(self.image_targets.iter().map(|k| ("offline/image-targets.pem".to_owned(), k)));
        out.extend(self.director_root.iter().map(|k| ("offline/director-root.pem".to_owned(), k)));
        out
    }

    /// The top-level targets key, or why the server cannot sign delegations itself.
    pub fn targets_key(&self) -> Result<&Signer, KeyDirError> {
        self.image_targets.as_ref().ok_or(KeyDirError::Offline("the image repository's top-level targets"))
    }

    /// The director root key, or why not.
    pub fn director_root_key(&self) -> Result<&Signer, KeyDirError> {
        self.director_root.as_ref().ok_or(KeyDirError::Offline("the director's root"))
    }
}

fn offline(dir: &Path) -> PathBuf {
    dir.join("offline")
}

fn online(dir: &Path) -> PathBuf {
    dir.join("online")
}

/// The file name of the `n`th (1-based) image root key that `generate` and a rotation write.
pub fn root_key_file(n: usize) -> String {
    format!("image-root-{n}.pem")
}

fn root_key_path(dir: &Path, n: usize) -> PathBuf {
    offline(dir).join(root_key_file(n))
}

/// New root keys need 1 ≤ threshold ≤ count.
fn check_threshold(count: usize, threshold: u64) -> Result<(), KeyDirError> {
    if count == 0 || threshold == 0 || threshold > count as u64 {
        return Err(KeyDirError::Parameters(format!(
            "--root-threshold {threshold} must be between 1 and --root-keys {count}"
        )));
    }
    Ok(())
}

/// Generates a complete key set into `dir`, refusing to overwrite any existing key.
pub fn generate(dir: &Path, root_keys: usize, root_threshold: u64) -> Result<KeySet, KeyDirError> {
    check_threshold(root_keys, root_threshold)?;
    let info_path = dir.join("keyset.json");
    if info_path.exists() {
        return Err(KeyError::Exists(info_path).into());
    }
    let targets = Signer::generate();
    let director_root = Signer::generate();
    let set = KeySet {
        image_root: (0..root_keys).map(|_| Signer::generate()).collect(),
        image_root_files: (1..=root_keys).map(root_key_file).collect(),
        image_root_threshold: root_threshold,
        image_targets: Some(targets.clone()),
        image_snapshot: Signer::generate(),
        image_timestamp: Signer::generate(),
        director_root: Some(director_root.clone()),
        director: Signer::generate(),
        online_extra: Vec::new(),
    };
    for (i, key) in set.image_root.iter().enumerate() {
        key.write(&root_key_path(dir, i + 1))?;
    }
    targets.write(&offline(dir).join("image-targets.pem"))?;
    director_root.write(&offline(dir).join("director-root.pem"))?;
    set.image_snapshot.write(&online(dir).join("image-snapshot.pem"))?;
    set.image_timestamp.write(&online(dir).join("image-timestamp.pem"))?;
    set.director.write(&online(dir).join("director.pem"))?;
    write_info(dir, KeySetInfo { image_root_threshold: root_threshold })?;
    Ok(set)
}

fn write_info(dir: &Path, info: KeySetInfo) -> Result<(), KeyDirError> {
    let path = dir.join("keyset.json");
    let body = serde_json::to_vec_pretty(&info)
        .map_err(|e| KeyDirError::Info { path: path.clone(), message: e.to_string() })?;
    std::fs::write(&path, body).map_err(|source| KeyDirError::Io { path, source })
}

/// The online keys that may be held by a PKCS#11 token instead of a file in `online/`, by the
/// name of the file they replace (without `.pem`): `pkcs11_keys` in the configuration.
pub const ONLINE_ROLES: [&str; 3] = ["image-snapshot", "image-timestamp", "director"];

/// Whether `name` may name an online key held by a token (`pkcs11_keys`): one of
/// [`ONLINE_ROLES`], or a further online key's name (a rotation's next key), never an offline
/// key's, which the server must not be able to use at all.
pub fn check_token_key_name(name: &str) -> Result<(), String> {
    let offline = name.starts_with("image-root") || name == "image-targets" || name == "director-root";
    if offline {
        return Err(format!(
            "{name:?} is not an online key: root and top-level targets keys never sign on the server (use them in a key ceremony: `repo sign --key pkcs11:…`)"
        ));
    }
    let simple = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !simple {
        return Err(format!(
            "{name:?}: name an online key with lowercase letters, digits, - and _ (as its file in online/ would be)"
        ));
    }
    Ok(())
}

/// Loads every key of a directory made by [`generate`]; `offline/` (and `keyset.json`, which
/// only describes the root keys) may be absent, the three online keys may not.
pub fn load(dir: &Path) -> Result<KeySet, KeyDirError> {
    load_with_tokens(dir, &std::collections::HashMap::new())
}

/// [`load`], with online keys held by PKCS#11 tokens (`pkcs11_keys`, by name): one named in
/// [`ONLINE_ROLES`] replaces that role's file, any other is a further online key (a rotation's
/// next one). A key in a token must not also have a file in `online/`.
pub fn load_with_tokens(
    dir: &Path,
    tokens: &std::collections::HashMap<String, std::sync::Arc<super::pkcs11::HsmKey>>,
) -> Result<KeySet, KeyDirError> {
    for name in tokens.keys() {
        check_token_key_name(name).map_err(KeyDirError::NotOnline)?;
    }
    let online_key = |role: &str| -> Result<Signer, KeyDirError> {
        let path = online(dir).join(format!("{role}.pem"));
        match tokens.get(role) {
            Some(_) if path.exists() => Err(KeyDirError::TokenAndFile { role: role.to_owned(), path }),
            Some(key) => Ok(Signer::hsm(std::sync::Arc::clone(key))),
            None => Ok(Signer::load(&path)?),
        }
    };
    let info_path = dir.join("keyset.json");
    let (image_root_files, image_root): (Vec<String>, Vec<Signer>) = load_root_keys(dir)?.into_iter().unzip();
    let optional = |path: PathBuf| if path.exists() { Signer::load(&path).map(Some) } else { Ok(None) };
    let image_targets = optional(offline(dir).join("image-targets.pem"))?;
    let director_root = optional(offline(dir).join("director-root.pem"))?;
    let named = |file: &str| ONLINE_ROLES.iter().any(|role| file.strip_suffix(".pem") == Some(role));
    let mut online_extra = load_pems(&online(dir), |n| !named(n))?;
    // Further online keys in a token (a rotation's next key), in name order after the files.
    let mut extra_names: Vec<&String> = tokens.keys().filter(|n| !ONLINE_ROLES.contains(&n.as_str())).collect();
    extra_names.sort();
    for name in extra_names {
        online_extra.push(online_key(name)?);
    }
    let online_set = |image_root, image_root_threshold| -> Result<KeySet, KeyDirError> {
        Ok(KeySet {
            image_root,
            image_root_files: image_root_files.clone(),
            image_root_threshold,
            image_targets: image_targets.clone(),
            image_snapshot: online_key("image-snapshot")?,
            image_timestamp: online_key("image-timestamp")?,
            director_root: director_root.clone(),
            director: online_key("director")?,
            online_extra: online_extra.clone(),
        })
    };
    if image_root.is_empty() && !info_path.exists() {
        return online_set(Vec::new(), 1);
    }
    let raw = std::fs::read(&info_path).map_err(|source| KeyDirError::Io { path: info_path.clone(), source })?;
    let info: KeySetInfo = serde_json::from_slice(&raw)
        .map_err(|e| KeyDirError::Info { path: info_path.clone(), message: e.to_string() })?;
    if image_root.is_empty() {
        return online_set(Vec::new(), info.image_root_threshold.max(1));
    }
    if info.image_root_threshold == 0 || info.image_root_threshold > image_root.len() as u64 {
        return Err(KeyDirError::Info {
            path: info_path,
            message: format!(
                "image_root_threshold {} does not fit the {} image root keys found",
                info.image_root_threshold,
                image_root.len()
            ),
        });
    }
    online_set(image_root, info.image_root_threshold)
}

/// Every key in `KEYS/online/` (a rotation's next key may be put there while the server runs).
pub fn load_online(dir: &Path) -> Result<Vec<Signer>, KeyDirError> {
    load_pems(&online(dir), |_| true)
}

/// The image root keys in `offline/`, with their files' names, in name order.
fn load_root_keys(dir: &Path) -> Result<Vec<(String, Signer)>, KeyDirError> {
    load_named_pems(&offline(dir), |n| n.starts_with("image-root-"))
}

/// The `*.pem` files directly in `dir` whose names `wanted` accepts, sorted by name (none if
/// `dir` does not exist).
fn load_pems(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<Vec<Signer>, KeyDirError> {
    Ok(load_named_pems(dir, wanted)?.into_iter().map(|(_, key)| key).collect())
}

/// [`load_pems`], each key with its file's name.
fn load_named_pems(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<Vec<(String, Signer)>, KeyDirError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(KeyDirError::Io { path: dir.to_owned(), source }),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".pem") && wanted(n)))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            Signer::load(p).map(|key| (name, key)).map_err(KeyDirError::from)
        })
        .collect()
}

/// New image root keys written beside the current ones, not yet in use.
#[derive(Debug)]
pub struct PendingRootKeys {
    /// `offline/pending-root-v{N}/`.
    pub dir: PathBuf,
    /// The new keys.
    pub keys: Vec<Signer>,
    /// Their threshold.
    pub threshold: u64,
}

/// Generates `count` new image root keys for root `next_version` into
/// `offline/pending-root-v{next_version}/`. They replace the current keys only through
/// [`install_root_keys`], after the new root is committed, so a rotation that fails half-way
/// never touches the keys the current root trusts.
pub fn stage_root_keys(
    dir: &Path,
    next_version: u64,
    count: usize,
    threshold: u64,
) -> Result<PendingRootKeys, KeyDirError> {
    check_threshold(count, threshold)?;
    let pending = offline(dir).join(format!("pending-root-v{next_version}"));
    if pending.exists() {
        return Err(KeyDirError::Parameters(format!(
            "{} exists: an earlier rotation to root v{next_version} did not finish. If root v{next_version} was stored, \
             its keys are in there (move them into offline/ as image-root-N.pem); otherwise remove the directory",
            pending.display()
        )));
    }
    let keys: Vec<Signer> = (0..count).map(|_| Signer::generate()).collect();
    for (i, key) in keys.iter().enumerate() {
        key.write(&pending.join(root_key_file(i + 1)))?;
    }
    Ok(PendingRootKeys { dir: pending, keys, threshold })
}

/// Makes pending keys the image root keys: the old files move to `offline/retired-v{old}/`
/// (never overwriting), the new ones into place, and `keyset.json` is replaced atomically.
pub fn install_root_keys(dir: &Path, pending: &PendingRootKeys, old_version: u64) -> Result<(), KeyDirError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyDirError::Io { path, source }
    };
    let off = offline(dir);
    let mut retired = off.join(format!("retired-v{old_version}"));
    while retired.exists() {
        retired = off.join(format!("retired-v{old_version}-{}", crate::storage::random_hex(3)));
    }
    std::fs::create_dir(&retired).map_err(io(&retired))?;
    for entry in std::fs::read_dir(&off).map_err(io(&off))? {
        let path = entry.map_err(io(&off))?.path();
        let is_root = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("image-root-"));
        if is_root
            && path.is_file()
            && let Some(name) = path.file_name()
        {
            let to = retired.join(name);
            std::fs::rename(&path, &to).map_err(io(&to))?;
        }
    }
    for entry in std::fs::read_dir(&pending.dir).map_err(io(&pending.dir))? {
        let path = entry.map_err(io(&pending.dir))?.path();
        if let Some(name) = path.file_name() {
            let to = off.join(name);
            std::fs::rename(&path, &to).map_err(io(&to))?;
        }
    }
    std::fs::remove_dir(&pending.dir).map_err(io(&pending.dir))?;
    write_info(dir, KeySetInfo { image_root_threshold: pending.threshold })
}

/// Removes pending keys of a rotation that did not happen.
pub fn discard_pending(pending: &PendingRootKeys) {
    let _ = std::fs::remove_dir_all(&pending.dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_gives_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let made = generate(dir.path(), 3, 2).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.image_root.len(), 3);
        assert_eq!(loaded.image_root_threshold, 2);
        let ids = |v: &[Signer]| v.iter().map(|k| k.keyid().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(&loaded.image_root), ids(&made.image_root));
        assert_eq!(loaded.director.keyid(), made.director.keyid());
        assert!(generate(dir.path(), 2, 2).is_err(), "must not overwrite");
    }

    #[test]
    fn thresholds_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(generate(dir.path(), 2, 3).is_err());
        assert!(generate(dir.path(), 2, 0).is_err());
    }
}
