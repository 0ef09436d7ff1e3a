//! `patchgate product create|sign-role`, and the product-role steps `release publish|yank --key`
//! share: fetch the current role, check it is signed by the manufacturer's key, build the next
//! version, sign it locally. The product key never leaves this machine; the server only ever
//! receives public keys and signed roles.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args, Subcommand};
use jiff::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};
use tough::schema::Targets;

use super::{Remote, ServerArgs, is_refusal};
use crate::domain::expiry::{RoleKind, expires_at};
use crate::domain::names::{FirmwareVersion, HardwareId, ProductName};
use crate::tuf::keys::Signer;

/// How often a role change is rebuilt and re-signed when another one lands first.
pub const ROLE_ATTEMPTS: u32 = 5;

/// Product commands.
#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Create a product (admin token), signed by a key the manufacturer keeps (--key) or, weaker,
    /// by a key the server holds (--server-signed).
    Create(CreateArgs),
    /// Re-sign the product's role with a fresh 90-day expiry (publisher token), or with
    /// --current-key and --out, sign it with a new key for a key-rotation ceremony.
    SignRole(SignRoleArgs),
}

/// `product create`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("signing").required(true).args(["key", "server_signed"])))]
pub struct CreateArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Product name, `[a-z0-9-]{1,64}`.
    #[arg(long)]
    name: String,
    /// A hardware id its images run on (repeat for each).
    #[arg(long = "hardware-id", required = true)]
    hardware_ids: Vec<String>,
    /// The product key (PKCS#8 PEM, e.g. from `patchgate keys generate --product`): only its
    /// public key and a first, empty role signed with it are sent.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Let the server hold the product key (weaker: whoever takes the server can sign firmware).
    #[arg(long)]
    server_signed: bool,
    /// Each release needs a second person's approval before a rollout may use it.
    #[arg(long)]
    two_person_approval: bool,
    /// How many of the most recently listed releases always stay in the product's role (the
    /// server's default, 20, if not given); older ones leave it once nothing needs them.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    retain_newest: Option<i64>,
}

/// `product sign-role`.
#[derive(Debug, Args)]
pub struct SignRoleArgs {
    /// Server URL, e.g. http://127.0.0.1:8080 (or PATCHGATE_SERVER).
    #[arg(long, env = "PATCHGATE_SERVER")]
    server: String,
    /// An API token (or PATCHGATE_TOKEN): any to read the role, publisher to send it.
    #[arg(long, env = "PATCHGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Product name.
    #[arg(long)]
    product: String,
    /// The product key to sign with.
    #[arg(long)]
    key: PathBuf,
    /// The key that signed the current role, when --key is its replacement (key rotation).
    #[arg(long, requires = "out")]
    current_key: Option<PathBuf>,
    /// Write the signed role to this file (for a ceremony's `repo submit`) instead of sending it.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs a product command.
pub async fn run(cmd: ProductCommand) -> anyhow::Result<()> {
    match cmd {
        ProductCommand::Create(args) => create(args).await,
        ProductCommand::SignRole(args) => sign_role(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let name = ProductName::parse(&args.name).context("--name")?;
    for h in &args.hardware_ids {
        HardwareId::parse(h).context("--hardware-id")?;
    }
    let mut body = json!({"name": name.as_str(), "hardware_ids": args.hardware_ids,
        "two_person_approval": args.two_person_approval});
    if let Some(n) = args.retain_newest {
        body["retain_newest"] = json!(n);
    }
    if let Some(path) = &args.key {
        let key = load_key(path, "--key")?;
        let expires = expires_at(RoleKind::Product, Timestamp::now());
        let mut role = Targets::new(patchgate_protocol::SPEC_VERSION.into(), std::num::NonZeroU64::MIN, expires);
        role.delegations = None;
        let signed = sign(&name, role, &key).await?;
        body["public_key"] = json!(hex::encode(key.public_bytes()));
        body["initial_role"] = serde_json::from_slice(&signed).context("the signed initial role")?;
    } else {
        eprintln!(
            "warning: --server-signed: the server will hold {name}'s key, so whoever takes the server can sign \
             firmware for it. Use --key with a key your CI keeps for production devices."
        );
    }
    let remote = args.server.remote()?;
    let product = remote.send_json(remote.api(Method::POST, &["products"]).json(&body)).await?;
    let text = |k: &str| product[k].as_str().unwrap_or("-").to_owned();
    say!("created product {} ({}, key {}): {}", text("name"), text("signing_mode"), text("keyid"), text("status"));
    say!("{}", text("signing_note"));
    if product["status"].as_str() == Some("pending_delegation") {
        say!(
            "an admin must now run the delegation ceremony before releases can be published: \
             `patchgate repo prepare delegations --out FILE`, `patchgate repo sign FILE --key <targets key>` \
             (offline), then `patchgate repo submit FILE`"
        );
    }
    Ok(())
}

async fn sign_role(args: SignRoleArgs) -> anyhow::Result<()> {
    let product = ProductName::parse(&args.product).context("--product")?;
    let key = load_key(&args.key, "--key")?;
    let current = match &args.current_key {
        Some(path) => Some(load_key(path, "--current-key")?),
        None => None,
    };
    let (verifier, verifier_file) = match (&current, &args.current_key) {
        (Some(k), Some(path)) => (k, path.as_path()),
        _ => (&key, args.key.as_path()),
    };
    let remote = Remote::new(&args.server, args.token.as_deref())?;
    if let Some(out) = &args.out {
        if out.exists() {
            bail!("--out {} already exists; refusing to overwrite it", out.display());
        }
        let role = current_role(&remote, &product, verifier, verifier_file).await?;
        let next = next_role(&role, &product, RoleChange::Keep, Timestamp::now())?;
        let (version, count) = (next.version, next.targets.len());
        let bytes = sign(&product, next, &key).await?;
        write_new(out, &bytes)?;
        say!(
            "wrote {product} role version {version} ({count} targets) signed by key {} to {}",
            key.keyid(),
            out.display()
        );
        if current.is_some() {
            say!(
                "it verifies only once the top-level targets role delegates {product} to this key: \
                 `patchgate repo prepare delegations --product-key {product}={}`, sign that, then \
                 `patchgate repo submit TARGETS_FILE {product}={}`",
                args.key.display(),
                out.display()
            );
        }
        return Ok(());
    }
    if args.token.is_none() {
        bail!("sending the role needs a publisher --token (or PATCHGATE_TOKEN); or write it with --out FILE");
    }
    let answer = with_role_retries("renewing the role", async || {
        let role = current_role(&remote, &product, &key, &args.key).await?;
        let next = next_role(&role, &product, RoleChange::Keep, Timestamp::now())?;
        post_role(&remote, &product, sign(&product, next, &key).await?).await
    })
    .await?;
    print_role_answer(&answer);
    Ok(())
}

/// Reads a PKCS#8 PEM key file, naming the flag it came from in errors.
/// A key file, or a key held by a PKCS#11 token (an HSM, a smart card) named by a `pkcs11:` URI
/// in its place: signing then happens in the token.
pub fn load_key(path: &Path, flag: &str) -> anyhow::Result<Signer> {
    if let Some(uri) = path.to_str().filter(|p| p.starts_with("pkcs11:")) {
        return token_key(uri).with_context(|| flag.to_owned());
    }
    Signer::load(path).with_context(|| flag.to_owned())
}

/// The key a `pkcs11:` URI names, checked (Ed25519, its public half verifying its private one).
pub fn token_key(uri: &str) -> anyhow::Result<Signer> {
    let uri: crate::tuf::pkcs11::KeyUri = uri.parse()?;
    let key = crate::tuf::pkcs11::HsmKey::open(&uri, 1)?;
    Ok(Signer::hsm(std::sync::Arc::new(key)))
}

/// Writes `bytes` to a file that must not exist yet.
pub fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", path.display()))
}

/// Fetches the product's current role and checks that `key` signed it.
///
/// A server that was tampered with could otherwise hand the manufacturer a role with a target
/// it slipped in, to be signed along with the next release.
pub async fn current_role(
    remote: &Remote,
    product: &ProductName,
    key: &Signer,
    key_file: &Path,
) -> anyhow::Result<Targets> {
    let bytes = remote
        .send_bytes(remote.api(Method::GET, &["products", product.as_str(), "role"]))
        .await
        .with_context(|| format!("fetching the current {product} role"))?;
    verify_role(&bytes, product, key, key_file)
}

/// Checks that `bytes` is a product role signed by `key`, and returns it.
pub fn verify_role(bytes: &[u8], product: &ProductName, key: &Signer, key_file: &Path) -> anyhow::Result<Targets> {
    let public = ed25519_dalek::VerifyingKey::from_bytes(&key.public_bytes())
        .with_context(|| format!("{} holds no valid ed25519 key", key_file.display()))?;
    let signed = patchgate_protocol::verify(bytes, &public).map_err(|e| {
        anyhow::anyhow!(
            "refusing to sign on top of the {product} role the server sent: it is not signed by {} (key {}): {e}. \
             Signing it could add targets you never published. If the product key was rotated, give the key \
             that signed the current role with --current-key",
            key_file.display(),
            key.keyid()
        )
    })?;
    let role: Targets =
        serde_json::from_value(signed).with_context(|| format!("the {product} role is not a TUF targets role"))?;
    if role.delegations.as_ref().is_some_and(|d| !d.roles.is_empty()) {
        bail!("the {product} role delegates to other roles; product roles must not");
    }
    Ok(role)
}

/// What the next version of a product role changes.
#[derive(Debug)]
pub enum RoleChange {
    /// The same targets (renewal or key rotation).
    Keep,
    /// One more target.
    Add(tough::TargetName, Box<tough::schema::Target>),
    /// Drop the target of this version (a yank).
    Remove(FirmwareVersion),
}

/// The names of the images `role` lists for `version` of `product` (not its deltas).
pub fn listed_names(role: &Targets, product: &ProductName, version: &FirmwareVersion) -> Vec<tough::TargetName> {
    let prefix = format!("{product}/{version}/");
    role.targets
        .keys()
        .filter(|n| n.raw().starts_with(&prefix) && !n.raw().contains(patchgate_protocol::delta::NAME_MARKER))
        .cloned()
        .collect()
}

/// Drops the deltas whose source or target image `role` no longer lists (a yank or a retention
/// delisting took it out): useless to devices, and the server refuses a role listing them.
/// Returns their names.
fn drop_dangling_deltas(role: &mut Targets) -> Vec<String> {
    let lists = |end: &patchgate_protocol::DeltaEnd| {
        role.targets
            .iter()
            .any(|(n, t)| n.raw() == end.name && t.length == end.length && hex::encode(&t.hashes.sha256) == end.sha256)
    };
    let dangling: Vec<tough::TargetName> = role
        .targets
        .iter()
        .filter(|(n, _)| n.raw().contains(patchgate_protocol::delta::NAME_MARKER))
        .filter(|(_, t)| {
            let custom = Value::Object(t.custom.clone().into_iter().collect());
            serde_json::from_value::<patchgate_protocol::DeltaCustom>(custom)
                .map_or(true, |c| !lists(&c.delta.source) || !lists(&c.delta.target))
        })
        .map(|(n, _)| n.clone())
        .collect();
    for name in &dangling {
        role.targets.remove(name);
    }
    dangling.iter().map(|n| n.raw().to_owned()).collect()
}

/// The next version of `current`: same targets but for `change`, no delegations, and a fresh
/// product-role expiry from `now`.
pub fn next_role(
    current: &Targets,
    product: &ProductName,
    change: RoleChange,
    now: Timestamp,
) -> anyhow::Result<Targets> {
    let mut next = current.clone();
    next.version = current.version.checked_add(1).context("the role's version cannot grow further")?;
    next.expires = expires_at(RoleKind::Product, now);
    next.delegations = None;
    match change {
        RoleChange::Keep => {}
        RoleChange::Add(name, target) => {
            if let Some(version) = target.custom.get("version").and_then(Value::as_str)
                && let Ok(version) = FirmwareVersion::parse(version)
                && let Some(listed) = listed_names(current, product, &version).first()
            {
                bail!("the {product} role already lists version {version} as {}", listed.raw());
            }
            next.targets.insert(name, *target);
        }
        RoleChange::Remove(version) => {
            let names = listed_names(current, product, &version);
            if names.is_empty() {
                bail!("the {product} role does not list version {version} (already yanked, or never published)");
            }
            for name in names {
                next.targets.remove(&name);
            }
        }
    }
    Ok(next)
}

/// Signs a product role with `key`; the canonical envelope bytes.
pub async fn sign(product: &ProductName, mut role: Targets, key: &Signer) -> anyhow::Result<Vec<u8>> {
    for name in drop_dangling_deltas(&mut role) {
        eprintln!("dropping the delta {name}: the role no longer lists an image it joins");
    }
    let (version, expires) = (role.version.get(), role.expires);
    let signed = crate::tuf::sign::sign_role(product.as_str(), version, expires, role, &[key]).await?;
    Ok(signed.bytes)
}

/// Sends a signed role to `POST /api/v1/products/{product}/role`.
pub async fn post_role(remote: &Remote, product: &ProductName, role: Vec<u8>) -> anyhow::Result<Value> {
    let request = remote
        .api(Method::POST, &["products", product.as_str(), "role"])
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(role);
    remote.send_json(request).await.with_context(|| format!("sending the {product} role"))
}

/// Prints the server's answer to a new role.
pub fn print_role_answer(answer: &Value) {
    let list = |k: &str| {
        let items: Vec<&str> = answer[k].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if items.is_empty() { "none".to_owned() } else { items.join(", ") }
    };
    say!(
        "{} role version {}: lists {}; yanked {}",
        answer["product"].as_str().unwrap_or("-"),
        answer["version"],
        list("listed"),
        list("yanked")
    );
}

/// Runs `attempt` again (up to [`ROLE_ATTEMPTS`] times) while the server answers
/// `role_version_conflict`: another role change landed between fetching and sending.
pub async fn with_role_retries<T>(
    what: &str,
    mut attempt: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut n = 1;
    loop {
        match attempt().await {
            Err(e) if is_refusal(&e, "role_version_conflict") => {
                if n >= ROLE_ATTEMPTS {
                    return Err(e.context(format!("{what}: the role kept changing, gave up after {n} attempts")));
                }
                eprintln!(
                    "the role changed on the server while {what} (attempt {n} of {ROLE_ATTEMPTS}); building on the new one"
                );
                n += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuf::metadata::{TargetEntry, product_targets};
    use patchgate_protocol::TargetCustom;

    fn product() -> ProductName {
        ProductName::parse("pump-x1").unwrap()
    }

    fn entry(version: &str) -> TargetEntry {
        TargetEntry {
            name: format!("pump-x1/{version}/fw.bin"),
            length: 3,
            sha256: "aa".repeat(32),
            sha512: "bb".repeat(64),
            custom: TargetCustom {
                version: version.into(),
                hardware_ids: vec!["hw".into()],
                rollback_floor: "0.0.0".into(),
                released_at: "2026-11-24T10:00:00Z".into(),
            }
            .into(),
        }
    }

    fn role(version: u64, versions: &[&str]) -> Targets {
        let entries: Vec<TargetEntry> = versions.iter().map(|v| entry(v)).collect();
        product_targets(version, "2027-01-01T00:00:00Z".parse().unwrap(), &entries).unwrap()
    }

    fn names(role: &Targets) -> Vec<String> {
        let mut names: Vec<String> = role.targets.keys().map(|n| n.raw().to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_next_role_adds_or_removes_exactly_one_target_and_bumps_the_version() {
        let now: Timestamp = "2026-11-24T10:00:00.5Z".parse().unwrap();
        let current = role(3, &["1.0.0", "1.1.0"]);
        let new = role(1, &["1.2.0"]).targets.into_iter().next().unwrap();
        let added = next_role(&current, &product(), RoleChange::Add(new.0, Box::new(new.1)), now).unwrap();
        assert_eq!(added.version.get(), 4);
        assert_eq!(added.expires, "2027-02-22T10:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(names(&added), ["pump-x1/1.0.0/fw.bin", "pump-x1/1.1.0/fw.bin", "pump-x1/1.2.0/fw.bin"]);
        assert_eq!(added.targets.values().filter(|t| current.targets.values().any(|c| c == *t)).count(), 2);

        let removed =
            next_role(&current, &product(), RoleChange::Remove(FirmwareVersion::parse("1.0.0").unwrap()), now).unwrap();
        assert_eq!(removed.version.get(), 4);
        assert_eq!(names(&removed), ["pump-x1/1.1.0/fw.bin"]);

        let kept = next_role(&current, &product(), RoleChange::Keep, now).unwrap();
        assert_eq!((kept.version.get(), names(&kept)), (4, names(&current)));
        assert!(kept.delegations.is_none());
    }

    #[test]
    fn the_next_role_refuses_a_listed_version_and_an_unlisted_yank() {
        let now = Timestamp::now();
        let current = role(2, &["1.0.0"]);
        let mut again = role(1, &["1.0.0"]).targets.into_iter().next().unwrap();
        again.1.length = 4;
        assert!(next_role(&current, &product(), RoleChange::Add(again.0, Box::new(again.1)), now).is_err());
        let unlisted = RoleChange::Remove(FirmwareVersion::parse("2.0.0").unwrap());
        assert!(next_role(&current, &product(), unlisted, now).is_err());
    }

    #[tokio::test]
    async fn a_role_verifies_only_under_the_key_that_signed_it() {
        let key = Signer::generate();
        let bytes = sign(&product(), role(2, &["1.0.0"]), &key).await.unwrap();
        let back = verify_role(&bytes, &product(), &key, Path::new("k.pem")).unwrap();
        assert_eq!((back.version.get(), names(&back)), (2, vec!["pump-x1/1.0.0/fw.bin".to_owned()]));
        let other = Signer::generate();
        let err = verify_role(&bytes, &product(), &other, Path::new("other.pem")).unwrap_err();
        assert!(err.to_string().contains("--current-key"), "{err}");
    }
}
