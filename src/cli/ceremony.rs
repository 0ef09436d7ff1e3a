//! `patchgate repo prepare|sign|submit`: key ceremonies for roots and delegations.
//!
//! The running server never holds a root or top-level targets key (docs/design.md §1): an admin asks
//! it for the unsigned next version (`prepare`), each key holder signs the file on their own,
//! possibly air-gapped, machine (`sign`: no server, no configuration, no database), and the admin
//! uploads the result (`submit`), which the server checks before accepting. Only public keys
//! ever leave a key holder's machine.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::ServerArgs;
use super::product::{load_key, write_new};
use crate::domain::names::ProductName;
use crate::tuf::keys::Signer;

/// Which repository a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RepoName {
    /// The image repository (offline root and targets keys).
    Image,
    /// The director (offline root key).
    Director,
}

impl RepoName {
    fn as_str(self) -> &'static str {
        match self {
            RepoName::Image => "image",
            RepoName::Director => "director",
        }
    }
}

/// What `repo prepare` prepares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrepareKind {
    /// The next root (keys, thresholds, a fresh expiry).
    Root,
    /// The next top-level targets role: one delegation per product.
    Delegations,
}

/// `repo prepare`. Every KEY is 64 hex characters (a public key) or a PEM key file, of which
/// only the public key is sent.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// root | delegations
    #[arg(value_enum)]
    kind: PrepareKind,
    #[command(flatten)]
    server: ServerArgs,
    /// File to write the unsigned metadata to (never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Repository.
    #[arg(long, value_enum, default_value = "image")]
    repo: RepoName,
    /// A root KEY to add (repeat).
    #[arg(long = "add-root-key", value_name = "KEY")]
    add_root_keys: Vec<String>,
    /// A root key to remove: its key id (`patchgate keys show`) or its key file (repeat).
    #[arg(long = "remove-root-key", value_name = "KEYID")]
    remove_root_keys: Vec<String>,
    /// Root signatures the new root needs.
    #[arg(long)]
    root_threshold: Option<u64>,
    /// New top-level targets KEY.
    #[arg(long, value_name = "KEY")]
    targets_key: Option<String>,
    /// New snapshot KEY.
    #[arg(long, value_name = "KEY")]
    snapshot_key: Option<String>,
    /// New timestamp KEY.
    #[arg(long, value_name = "KEY")]
    timestamp_key: Option<String>,
    /// The director's new online KEY (targets, snapshot and timestamp).
    #[arg(long, value_name = "KEY")]
    online_key: Option<String>,
    /// A product's new key, NAME=KEY (repeat).
    #[arg(long = "product-key", value_name = "NAME=KEY")]
    product_keys: Vec<String>,
}

/// `repo sign`: works offline, with no configuration.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The metadata file `repo prepare` wrote (signed in place).
    file: PathBuf,
    /// Your key file, or a `pkcs11:` URI naming your key in a token (an HSM or a smart card).
    #[arg(long)]
    key: PathBuf,
    /// Sign without asking (after checking the summary some other way).
    #[arg(long)]
    yes: bool,
}

/// `repo submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Repository.
    #[arg(long, value_enum, default_value = "image")]
    repo: RepoName,
    /// Signed files: root or top-level targets as FILE, product roles as PRODUCT=FILE.
    #[arg(required = true, value_name = "FILE|PRODUCT=FILE")]
    files: Vec<String>,
}

/// `repo prepare`: asks the server for the unsigned next version and writes it to `--out`.
pub async fn prepare(args: PrepareArgs) -> anyhow::Result<()> {
    if args.out.exists() {
        bail!("--out {} already exists; refusing to overwrite it", args.out.display());
    }
    let kind = match args.kind {
        PrepareKind::Root => "root",
        PrepareKind::Delegations => "delegations",
    };
    let mut body = json!({"repo": args.repo.as_str(), "kind": kind});
    let add: Vec<String> =
        args.add_root_keys.iter().map(|k| public_key_arg("--add-root-key", k)).collect::<Result<_, _>>()?;
    let remove: Vec<String> =
        args.remove_root_keys.iter().map(|k| keyid_arg("--remove-root-key", k)).collect::<Result<_, _>>()?;
    if !add.is_empty() {
        body["add_root_keys"] = json!(add);
    }
    if !remove.is_empty() {
        body["remove_root_keys"] = json!(remove);
    }
    if let Some(n) = args.root_threshold {
        body["root_threshold"] = json!(n);
    }
    for (field, flag, value) in [
        ("targets_key", "--targets-key", &args.targets_key),
        ("snapshot_key", "--snapshot-key", &args.snapshot_key),
        ("timestamp_key", "--timestamp-key", &args.timestamp_key),
        ("online_key", "--online-key", &args.online_key),
    ] {
        if let Some(raw) = value {
            body[field] = json!(public_key_arg(flag, raw)?);
        }
    }
    if !args.product_keys.is_empty() {
        let mut products = Map::new();
        for raw in &args.product_keys {
            let (name, key) = raw.split_once('=').with_context(|| format!("--product-key {raw:?} is not NAME=KEY"))?;
            let name = ProductName::parse(name).context("--product-key")?;
            products.insert(name.to_string(), json!(public_key_arg("--product-key", key)?));
        }
        body["product_keys"] = Value::Object(products);
    }
    let remote = args.server.remote()?;
    let envelope = remote.send_json(remote.api(Method::POST, &["repo", "prepare"]).json(&body)).await?;
    let signed =
        envelope.get("signed").filter(|s| s.is_object()).context("the server's answer has no `signed` object")?;
    let previous = previous_version(&remote, args.repo, signed).await;
    let mut text = serde_json::to_string_pretty(&envelope)?;
    text.push('\n');
    write_new(&args.out, text.as_bytes())?;
    say!("wrote the unsigned {} {} to {}", args.repo.as_str(), kind, args.out.display());
    for line in describe(signed) {
        say!("  {line}");
    }
    match previous {
        Ok(old) => {
            say!("changes from version {}:", old["version"]);
            for line in changes(&old, signed) {
                say!("  {line}");
            }
        }
        Err(e) => say!("(could not fetch the previous version to compare: {e:#})"),
    }
    say!("next: each key holder runs `patchgate repo sign {} --key KEY`", args.out.display());
    if args.kind == PrepareKind::Root {
        say!("      (a threshold of the current root keys and of the new root keys must sign)");
    }
    say!("then: `patchgate repo submit --repo {} {}`", args.repo.as_str(), args.out.display());
    Ok(())
}

/// The version before `signed`, as the server publishes it to clients.
async fn previous_version(remote: &super::Remote, repo: RepoName, signed: &Value) -> anyhow::Result<Value> {
    let version = signed["version"].as_u64().filter(|v| *v > 1).context("this is the first version")?;
    let file = format!("{}.{}.json", version - 1, signed["_type"].as_str().unwrap_or("root"));
    let dir = if repo == RepoName::Image { "repo" } else { "director" };
    let envelope = remote.send_json(remote.get_public(&[dir, "metadata", &file])).await?;
    envelope.get("signed").cloned().context("not a TUF envelope")
}

/// `repo sign`: shows what the file says, asks, signs it in place.
pub async fn sign(args: SignArgs) -> anyhow::Result<()> {
    let path = &args.file;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut envelope: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let key = load_key(&args.key, "--key")?;
    let signed = envelope
        .get("signed")
        .filter(|s| s.is_object())
        .with_context(|| format!("{} is not TUF metadata (no `signed` object)", path.display()))?;
    say!("{}:", path.display());
    for line in describe(signed) {
        say!("  {line}");
    }
    if signed["_type"] == "root" {
        let listed = entries(signed).get("root").is_some_and(|e| e.keyids.contains(key.keyid()));
        let note = if listed {
            "is one of its root keys"
        } else {
            "is not one of its root keys (fine for a key of the current root)"
        };
        say!("  your key {} {note}", key.keyid());
    }
    let present: Vec<&str> = signatures(&envelope).iter().filter_map(|s| s["keyid"].as_str()).collect();
    say!("  signed so far by: {}", if present.is_empty() { "nobody".to_owned() } else { present.join(", ") });
    if !args.yes && !confirm(&format!("sign with key {}? [y/N] ", key.keyid()))? {
        bail!("not signed");
    }
    let count = sign_envelope(&mut envelope, &key).await?;
    let mut out = serde_json::to_string_pretty(&envelope)?;
    out.push('\n');
    write_atomic(path, out.as_bytes())?;
    say!("signed {} with key {}: it now has {count} signature(s)", path.display(), key.keyid());
    Ok(())
}

/// `repo submit`: uploads signed roles together.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let mut roles = Map::new();
    for arg in &args.files {
        let (role, path, envelope) = classify(arg)?;
        if signatures(&envelope).is_empty() {
            bail!(
                "{} has no signatures: sign it first with `patchgate repo sign {} --key KEY`",
                path.display(),
                path.display()
            );
        }
        if roles.insert(role.clone(), envelope).is_some() {
            bail!("two files for the {role} role");
        }
    }
    let remote = args.server.remote()?;
    let body = json!({"repo": args.repo.as_str(), "roles": roles});
    let answer = remote.send_json(remote.api(Method::POST, &["repo", "metadata"]).json(&body)).await?;
    for stored in answer["stored"].as_array().into_iter().flatten() {
        say!("stored {} {} version {}", args.repo.as_str(), stored["role"].as_str().unwrap_or("-"), stored["version"]);
    }
    Ok(())
}

/// Reads a `repo submit` argument: `FILE` (root or top-level targets, by `signed._type`) or
/// `PRODUCT=FILE`. Returns the role name, the file and its envelope.
fn classify(arg: &str) -> anyhow::Result<(String, PathBuf, Value)> {
    let product = match arg.split_once('=') {
        Some((name, file)) if !Path::new(arg).exists() => Some((ProductName::parse(name)?, PathBuf::from(file))),
        _ => None,
    };
    let path = product.as_ref().map_or_else(|| PathBuf::from(arg), |(_, file)| file.clone());
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let envelope: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let kind = envelope["signed"]["_type"].as_str().unwrap_or_default();
    let role = match (product, kind) {
        (Some((name, _)), "targets") => name.to_string(),
        (Some((name, _)), other) => bail!("{} is a {other:?} role, not the {name} targets role", path.display()),
        (None, "root") => "root".to_owned(),
        (None, "targets") if envelope["signed"]["targets"].as_object().is_some_and(|t| !t.is_empty()) => {
            bail!("{} lists targets, so it is a product role: give it as PRODUCT={}", path.display(), path.display())
        }
        (None, "targets") => "targets".to_owned(),
        (None, other) => bail!("{} is a {other:?} role; submit root, targets, or PRODUCT=FILE", path.display()),
    };
    Ok((role, path, envelope))
}

/// A public key argument: 64 hex characters, or a PEM key file (private PKCS#8 or public SPKI);
/// lowercase hex of the raw key.
pub fn public_key_arg(flag: &str, raw: &str) -> anyhow::Result<String> {
    if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        let key = patchgate_protocol::parse_public_key_hex(raw).with_context(|| format!("{flag} {raw}"))?;
        return Ok(hex::encode(key.as_bytes()));
    }
    if raw.starts_with("pkcs11:") {
        let key = crate::cli::product::token_key(raw).with_context(|| flag.to_owned())?;
        return Ok(hex::encode(key.public_bytes()));
    }
    let path = Path::new(raw);
    let pem = std::fs::read_to_string(path).with_context(|| {
        format!("{flag} {raw:?} is neither 64 hex characters (a public key), a pkcs11: URI nor a readable key file")
    })?;
    if let Ok(key) = Signer::load(path) {
        return Ok(hex::encode(key.public_bytes()));
    }
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
        .map_err(|_| anyhow::anyhow!("{flag} {raw}: not an ed25519 key file (PKCS#8 private or public key PEM)"))?;
    Ok(hex::encode(key.as_bytes()))
}

/// A key id argument: 64 hex characters, or a key file whose key id is taken.
pub fn keyid_arg(flag: &str, raw: &str) -> anyhow::Result<String> {
    if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(raw.to_ascii_lowercase());
    }
    let public = public_key_arg(flag, raw)?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&public, &mut bytes)?;
    Ok(patchgate_protocol::ed25519_keyid(&bytes))
}

/// One role a root lists, or one delegation of a targets role.
#[derive(Debug, PartialEq)]
struct Entry {
    keyids: BTreeSet<String>,
    threshold: u64,
    paths: Vec<String>,
}

/// A root's roles, or a targets role's delegations, by name.
fn entries(signed: &Value) -> BTreeMap<String, Entry> {
    fn strings(v: &Value) -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    }
    let entry = |v: &Value| Entry {
        keyids: strings(&v["keyids"]).into_iter().collect(),
        threshold: v["threshold"].as_u64().unwrap_or(0),
        paths: strings(&v["paths"]),
    };
    if let Some(roles) = signed["roles"].as_object() {
        return roles.iter().map(|(name, v)| (name.clone(), entry(v))).collect();
    }
    let delegated = signed["delegations"]["roles"].as_array().into_iter().flatten();
    delegated.filter_map(|v| Some((v["name"].as_str()?.to_owned(), entry(v)))).collect()
}

/// What a key holder checks before signing, one line each.
fn describe(signed: &Value) -> Vec<String> {
    let kind = signed["_type"].as_str().unwrap_or("?");
    let expires = signed["expires"].as_str().unwrap_or("?");
    let mut lines = vec![format!("_type {kind}, version {}, expires {expires}", signed["version"])];
    for (name, e) in entries(signed) {
        let keys = e.keyids.iter().cloned().collect::<Vec<_>>().join(", ");
        if kind == "root" {
            lines.push(format!("role {name}: threshold {} of keys {keys}", e.threshold));
        } else {
            lines.push(format!(
                "delegation {name}: key {keys} (threshold {}), paths {}",
                e.threshold,
                e.paths.join(" ")
            ));
        }
    }
    if kind == "targets" {
        lines.push(format!("targets: {}", signed["targets"].as_object().map_or(0, Map::len)));
    }
    lines
}

/// What `new` changes from `old`, one line each.
fn changes(old: &Value, new: &Value) -> Vec<String> {
    let (before, after) = (entries(old), entries(new));
    let mut lines = Vec::new();
    for name in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        match (before.get(name), after.get(name)) {
            (None, Some(_)) => lines.push(format!("{name}: new")),
            (Some(_), None) => lines.push(format!("{name}: removed")),
            (Some(b), Some(a)) if a != b => {
                for k in a.keyids.difference(&b.keyids) {
                    lines.push(format!("{name}: adds key {k}"));
                }
                for k in b.keyids.difference(&a.keyids) {
                    lines.push(format!("{name}: removes key {k}"));
                }
                if a.threshold != b.threshold {
                    lines.push(format!("{name}: threshold {} -> {}", b.threshold, a.threshold));
                }
                if a.paths != b.paths {
                    lines.push(format!("{name}: paths {} -> {}", b.paths.join(" "), a.paths.join(" ")));
                }
            }
            _ => {}
        }
    }
    if lines.is_empty() {
        lines.push("keys and thresholds unchanged".to_owned());
    }
    let expires = |v: &Value| v["expires"].as_str().unwrap_or("?").to_owned();
    lines.push(format!("expires {} -> {}", expires(old), expires(new)));
    lines
}

fn signatures(envelope: &Value) -> &[Value] {
    envelope["signatures"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Signs the canonical JSON of `signed` with `key`, replacing an earlier signature by the same
/// key; returns how many signatures the envelope has.
async fn sign_envelope(envelope: &mut Value, key: &Signer) -> anyhow::Result<usize> {
    let payload = patchgate_protocol::canonical_json(&envelope["signed"])?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let sig = tough::sign::Sign::sign(key, &payload, &rng).await.map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    let entry = json!({"keyid": key.keyid(), "sig": hex::encode(sig)});
    let object = envelope.as_object_mut().context("the metadata is not a JSON object")?;
    let list = object.entry("signatures").or_insert_with(|| json!([]));
    let list = list.as_array_mut().context("`signatures` is not a list")?;
    list.retain(|s| s["keyid"].as_str() != Some(key.keyid()));
    list.push(entry);
    Ok(list.len())
}

/// Asks on the terminal; refuses when there is none.
fn confirm(question: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("stdin is not a terminal, so nobody can confirm: check the summary above and pass --yes");
    }
    eprint!("{question}");
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer).context("reading the answer")?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Replaces `path` with `bytes` through a temporary file in the same directory, so a crash
/// leaves either the old or the new file.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = write_new(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display())));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared() -> Value {
        json!({"signed": {"_type": "root", "version": 2, "expires": "2027-11-24T10:00:00Z",
            "roles": {"root": {"keyids": ["aa"], "threshold": 1}}}, "signatures": []})
    }

    #[tokio::test]
    async fn signing_twice_with_one_key_keeps_one_signature() {
        let (a, b) = (Signer::generate(), Signer::generate());
        let mut envelope = prepared();
        assert_eq!(sign_envelope(&mut envelope, &a).await.unwrap(), 1);
        assert_eq!(sign_envelope(&mut envelope, &a).await.unwrap(), 1);
        assert_eq!(sign_envelope(&mut envelope, &b).await.unwrap(), 2);
        let bytes = serde_json::to_vec_pretty(&envelope).unwrap();
        for key in [&a, &b] {
            let public = ed25519_dalek::VerifyingKey::from_bytes(&key.public_bytes()).unwrap();
            assert_eq!(patchgate_protocol::verify(&bytes, &public).unwrap(), prepared()["signed"]);
        }
    }

    #[test]
    fn signing_in_place_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.json");
        std::fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn keys_are_hex_or_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = Signer::generate();
        let pem = dir.path().join("k.pem");
        key.write(&pem).unwrap();
        let public = hex::encode(key.public_bytes());
        assert_eq!(public_key_arg("--k", &public).unwrap(), public);
        assert_eq!(public_key_arg("--k", &public.to_ascii_uppercase()).unwrap(), public);
        assert_eq!(public_key_arg("--k", pem.to_str().unwrap()).unwrap(), public);
        assert_eq!(keyid_arg("--k", pem.to_str().unwrap()).unwrap(), key.keyid());
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key").unwrap();
        for bad in ["abc", &"zz".repeat(32), junk.to_str().unwrap(), "/nonexistent/k.pem", &"00".repeat(32)] {
            let err = public_key_arg("--targets-key", bad).unwrap_err();
            assert!(format!("{err:#}").contains("--targets-key"), "{bad}: {err:#}");
        }
    }

    #[test]
    fn changes_name_added_and_removed_keys() {
        let old = prepared()["signed"].clone();
        let mut new = old.clone();
        new["roles"]["root"] = json!({"keyids": ["bb", "cc"], "threshold": 2});
        let lines = changes(&old, &new);
        assert!(lines.contains(&"root: adds key bb".to_owned()), "{lines:?}");
        assert!(lines.contains(&"root: removes key aa".to_owned()), "{lines:?}");
        assert!(lines.contains(&"root: threshold 1 -> 2".to_owned()), "{lines:?}");
    }

    #[test]
    fn submit_files_are_classified_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, signed: Value| {
            let path = dir.path().join(name);
            std::fs::write(&path, json!({"signed": signed, "signatures": []}).to_string()).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let root = file("root.json", json!({"_type": "root"}));
        let top = file("targets.json", json!({"_type": "targets", "targets": {}}));
        let product = file("p.json", json!({"_type": "targets", "targets": {"pump-x1/1.0.0/fw.bin": {}}}));
        assert_eq!(classify(&root).unwrap().0, "root");
        assert_eq!(classify(&top).unwrap().0, "targets");
        assert_eq!(classify(&format!("pump-x1={product}")).unwrap().0, "pump-x1");
        assert!(classify(&product).is_err());
        assert!(classify(&format!("pump-x1={root}")).is_err());
    }
}
