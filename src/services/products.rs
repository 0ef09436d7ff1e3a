//! Creating and listing products. Creating one adds its delegation to the top-level targets
//! role and signs its first (empty) role.

use super::auth::Caller;
use super::image_repo::{IMAGE, commit_with_snapshot, next_version, sign_product_role, sign_top_targets};
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert};
use crate::db::entities::product;
use crate::db::products::{NewProduct, product_get_by_name, product_insert, product_list};
use crate::domain::names::{HardwareId, ProductName};
use crate::tuf::keys::Signer;

/// "Server-signed": the server holds the product key. Weaker than a manufacturer-held key,
/// because whoever takes the server can sign targets for the product.
pub const SERVER_SIGNED: &str = "server";

/// A product to create.
pub struct CreateProduct {
    /// Its name.
    pub name: ProductName,
    /// Hardware ids its images run on (at least one).
    pub hardware_ids: Vec<HardwareId>,
}

/// Creates a server-signed product and its delegation.
pub async fn create_product(
    svc: &Services,
    caller: &Caller,
    input: CreateProduct,
) -> Result<product::Model, ServiceError> {
    if input.hardware_ids.is_empty() {
        return Err(ServiceError::invalid("missing_hardware_ids", "a product needs at least one hardware id"));
    }
    let name = input.name.as_str();
    if product_get_by_name(&svc.db, name).await?.is_some() {
        return Err(ServiceError::conflict("product_exists", format!("product {name} already exists")));
    }
    let signer = product_key(svc, name)?;
    let hardware_ids: Vec<&str> = input.hardware_ids.iter().map(HardwareId::as_str).collect();
    let hardware_ids_json = serde_json::to_string(&hardware_ids).map_err(anyhow::Error::new)?;

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
            signing_mode: SERVER_SIGNED,
            public_key: hex::encode(signer.public_bytes()),
            keyid: signer.keyid().to_owned(),
            created_at: now.as_second(),
        },
    )
    .await?;
    let products = product_list(&txn).await?;
    let targets = sign_top_targets(&svc.keys, &products, next_version(&txn, IMAGE, "targets").await?, now).await?;
    let role = sign_product_role(svc, &created, &[], next_version(&txn, IMAGE, name).await?, now).await?;
    commit_with_snapshot(&txn, svc, now, &[targets, role]).await?;
    audit_insert(
        &txn,
        NewAudit {
            at: now.as_second(),
            actor: &caller.name,
            action: "product.create",
            object: &format!("product:{name}"),
            before: None,
            after: Some(serde_json::json!({"hardware_ids": hardware_ids, "signing_mode": SERVER_SIGNED, "keyid": created.keyid}).to_string()),
        },
    )
    .await?;
    txn.commit().await?;
    tracing::info!(product = name, keyid = %created.keyid, "product created (server-signed)");
    Ok(created)
}

/// The server-held key for `name`: the existing file if a crashed attempt left one, else new.
fn product_key(svc: &Services, name: &str) -> Result<Signer, ServiceError> {
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
