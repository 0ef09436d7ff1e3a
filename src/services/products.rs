//! Creating and listing products. Creating one adds its delegation to the top-level targets
//! role and signs its first (empty) role.

use super::auth::Caller;
use super::image_repo::{IMAGE, commit_with_snapshot, next_version, sign_product_role, sign_top_targets};
use super::product_role::{check_role, product_delegation};
use super::retention::MAX_RETAIN_NEWEST;
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::entities::product;
use crate::db::products::{NewProduct, product_get_by_name, product_insert, product_list};
use crate::domain::names::{HardwareId, ProductName};
use crate::tuf::keys::Signer;
use crate::tuf::sign::SignedMetadata;
use sea_orm::TransactionTrait;

/// "Server-signed": the server holds the product key. Weaker than a manufacturer-held key,
/// because whoever takes the server can sign targets for the product.
pub const SERVER_SIGNED: &str = "server";
/// "Manufacturer-signed": only the manufacturer's key (kept in its CI) signs the product's role.
pub const MANUFACTURER_SIGNED: &str = "manufacturer";
/// The product's delegation is served.
pub const ACTIVE: &str = "active";
/// The product waits for a delegation ceremony (the top-level targets key is offline).
pub const PENDING_DELEGATION: &str = "pending_delegation";

/// A product to create.
pub struct CreateProduct {
    /// Its name.
    pub name: ProductName,
    /// Hardware ids its images run on (at least one).
    pub hardware_ids: Vec<HardwareId>,
    /// The manufacturer's public key and its signed, empty first role; `None` for a
    /// server-signed product.
    pub manufacturer: Option<ManufacturerKey>,
    /// Releases need a second person's approval before a rollout.
    pub requires_approval: bool,
    /// How many recently listed releases always stay listed (`None`: the default).
    pub retain_newest: Option<i64>,
}

/// A manufacturer-held product key.
pub struct ManufacturerKey {
    /// Raw ed25519 public key.
    pub public_key: [u8; 32],
    /// Role version 1 listing no targets, signed by that key (TUF clients refuse a delegation
    /// whose role does not exist, and only the manufacturer can sign it).
    pub initial_role: Vec<u8>,
}

/// Creates a product. With the top-level targets key at hand (development) its delegation is
/// signed now; otherwise it waits in `pending_delegation` for the ceremony.
pub async fn create_product(
    svc: &Services,
    caller: &Caller,
    input: CreateProduct,
) -> Result<product::Model, ServiceError> {
    if input.hardware_ids.is_empty() {
        return Err(ServiceError::invalid("missing_hardware_ids", "a product needs at least one hardware id"));
    }
    let retain_newest = check_retain_newest(input.retain_newest.unwrap_or(DEFAULT_RETAIN_NEWEST))?;
    let name = input.name.as_str();
    if product_get_by_name(&svc.db, name).await?.is_some() {
        return Err(ServiceError::conflict("product_exists", format!("product {name} already exists")));
    }
    let (mode, public_key, pending_role) = match &input.manufacturer {
        Some(m) => (MANUFACTURER_SIGNED, m.public_key, Some(m.initial_role.clone())),
        None => (SERVER_SIGNED, product_key(svc, name)?.public_bytes(), None),
    };
    let keyid = crate::tuf::keys::key_id(&crate::tuf::keys::tuf_public_key(&public_key));
    let hardware_ids: Vec<&str> = input.hardware_ids.iter().map(HardwareId::as_str).collect();
    let hardware_ids_json = serde_json::to_string(&hardware_ids).map_err(anyhow::Error::new)?;
    let delegate_now = svc.keys.image_targets.is_some();

    let txn = crate::db::begin_signing(&svc.db).await?;
    let now = svc.clock.now();
    // Checked again under the lock: two creations of one name must not both pass.
    if product_get_by_name(&txn, name).await?.is_some() {
        return Err(ServiceError::conflict("product_exists", format!("product {name} already exists")));
    }
    let created = product_insert(
        &txn,
        NewProduct {
            name,
            hardware_ids_json,
            signing_mode: mode,
            public_key: hex::encode(public_key),
            keyid,
            created_at: now.as_second(),
            status: if delegate_now { ACTIVE } else { PENDING_DELEGATION },
            pending_role,
            requires_approval: input.requires_approval,
            retain_newest,
        },
    )
    .await?;
    // The first role is checked even when the delegation waits: a bad one is refused now.
    let first_role = first_role(svc, &txn, &created, now).await?;
    if delegate_now {
        let products: Vec<product::Model> =
            product_list(&txn).await?.into_iter().filter(|p| p.status == ACTIVE).collect();
        let targets = sign_top_targets(&svc.keys, &products, next_version(&txn, IMAGE, "targets").await?, now).await?;
        crate::db::products::product_clear_pending(&txn, created.id).await?;
        commit_with_snapshot(&txn, svc, now, &[targets, first_role]).await?;
    }
    audit_insert(
        &txn,
        NewAudit {
            at: now.as_second(),
            actor: &caller.name,
            action: "product.create",
            object: &format!("product:{name}"),
            before: None,
            after: Some(
                serde_json::json!({"hardware_ids": hardware_ids, "signing_mode": mode, "keyid": created.keyid,
                "status": created.status, "two_person_approval": input.requires_approval,
                "retain_newest": retain_newest})
                .to_string(),
            ),
        },
    )
    .await?;
    super::image_repo::commit_signed(svc, txn).await?;
    if mode == SERVER_SIGNED {
        tracing::warn!(
            product = name,
            "product created server-signed: whoever takes the server can sign firmware for it"
        );
    }
    tracing::info!(product = name, keyid = %created.keyid, status = %created.status, mode, "product created");
    get_product(svc, name).await.or(Ok(created))
}

/// What a new product keeps listed by recency unless told otherwise.
pub const DEFAULT_RETAIN_NEWEST: i64 = 20;

fn check_retain_newest(n: i64) -> Result<i64, ServiceError> {
    if !(1..=MAX_RETAIN_NEWEST).contains(&n) {
        return Err(ServiceError::invalid(
            "invalid_retain_newest",
            format!("retain_newest must be 1 to {MAX_RETAIN_NEWEST}, not {n}"),
        ));
    }
    Ok(n)
}

/// Sets how many recently listed releases a product always keeps listed. The role changes at
/// the next publish (server-signed) or the next `publish --key` (manufacturer-signed).
pub async fn set_retain_newest(
    svc: &Services,
    caller: &Caller,
    name: &str,
    retain_newest: i64,
) -> Result<product::Model, ServiceError> {
    let retain_newest = check_retain_newest(retain_newest)?;
    let txn = svc.db.begin().await?;
    let product = product_get_by_name(&txn, name)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {name:?} does not exist")))?;
    if product.retain_newest != retain_newest {
        crate::db::products::product_set_retain_newest(&txn, product.id, retain_newest).await?;
        let now = svc.clock.now();
        audit_insert(
            &txn,
            NewAudit {
                at: now.as_second(),
                actor: &caller.name,
                action: "product.retention",
                object: &format!("product:{name}"),
                before: Some(serde_json::json!({"retain_newest": product.retain_newest}).to_string()),
                after: Some(serde_json::json!({"retain_newest": retain_newest}).to_string()),
            },
        )
        .await?;
    }
    txn.commit().await?;
    get_product(svc, name).await
}

/// What the retention policy says about a product's listed releases, were one more release
/// published now: what `patchgate release publish --key` leaves out of the role it signs.
pub async fn retention_advice(
    svc: &Services,
    product: &product::Model,
) -> Result<(usize, super::retention::Advice), ServiceError> {
    let listed = crate::db::releases::release_list_listed(&svc.db, product.id).await?;
    let advice = super::retention::advise(&svc.db, product, &listed, 1).await?;
    Ok((listed.len(), advice))
}

/// A product's first role: the manufacturer's (checked under its key) or signed now (on `db`,
/// the caller's transaction).
pub async fn first_role(
    svc: &Services,
    db: &impl sea_orm::ConnectionTrait,
    product: &product::Model,
    now: jiff::Timestamp,
) -> Result<SignedMetadata, ServiceError> {
    match &product.pending_role {
        Some(bytes) => {
            let checked = check_role(bytes, &product.name, &product_delegation(product)?, 1, now)?;
            if !checked.targets.is_empty() || !checked.deltas.is_empty() {
                return Err(ServiceError::invalid("invalid_initial_role", "the initial role must list no targets"));
            }
            Ok(checked.metadata)
        }
        None if product.signing_mode == MANUFACTURER_SIGNED => Err(ServiceError::invalid(
            "missing_initial_role",
            format!("manufacturer-signed product {} has no signed initial role", product.name),
        )),
        None => sign_product_role(svc, db, product, &[], 1, now).await,
    }
}

/// The server-held key for `name`: the existing file (or token key) if a crashed attempt left
/// one, else new.
fn product_key(svc: &Services, name: &str) -> Result<Signer, ServiceError> {
    if let Some(key) = crate::tuf::pkcs11::product_key(
        svc.config.product_keys_pkcs11.as_deref(),
        svc.config.pkcs11_sessions,
        name,
        true,
    ) {
        return key.map(Signer::hsm).map_err(|e| ServiceError::Internal(e.into()));
    }
    let path = svc.config.product_keys_dir().join(format!("{name}.pem"));
    if path.exists() {
        return Signer::load(&path).map_err(|e| ServiceError::Internal(e.into()));
    }
    let signer = Signer::generate();
    signer.write(&path).map_err(|e| ServiceError::Internal(e.into()))?;
    Ok(signer)
}

/// Every product.
pub async fn list_products(svc: &Services) -> Result<Vec<product::Model>, ServiceError> {
    Ok(product_list(&svc.db).await?)
}

/// The product named `name`, or 404.
pub async fn get_product(svc: &Services, name: &str) -> Result<product::Model, ServiceError> {
    product_get_by_name(&svc.db, name)
        .await?
        .ok_or_else(|| ServiceError::not_found("unknown_product", format!("product {name:?} does not exist")))
}
