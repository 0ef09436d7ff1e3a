//! Enrollment: admins create enrollment tokens (product, tags, expiry, uses); a device proves
//! possession of its key and trades a token for its own device token. Tags come from the
//! enrollment token, never from the device.

use patchgate_protocol::keys::ed25519_keyid;
use patchgate_protocol::report::EnrollAnswer;
use serde_json::json;

use super::audit::record;
use super::auth::{Caller, new_secret};
use super::caches::EnrollmentGrant;
use super::director::{metadata_rows, sign_device_metadata, sign_new_roles};
use super::image_repo::director_online_signer;
use super::{ServiceError, Services};
use crate::db::audit::{NewAudit, audit_insert_many};
use crate::db::device_metadata::device_metadata_insert_many;
use crate::db::devices::{
    NewDevice, device_find, device_insert, device_reenroll, devices_find_many, devices_insert_signed,
};
use crate::db::enrollment::{
    NewEnrollmentToken, enrollment_token_find_by_hash, enrollment_token_get, enrollment_token_insert,
    enrollment_token_list, enrollment_token_revoke, enrollment_token_take_use, enrollment_token_take_uses,
};
use crate::db::entities::enrollment_token;
use crate::db::products::{product_get, product_get_by_name};
use crate::domain::ids::{DeviceId, parse_tags};

/// Enrollment tokens start with this, device tokens with [`DEVICE_TOKEN_PREFIX`].
pub const ENROLLMENT_TOKEN_PREFIX: &str = "pge_";
/// The prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "pgd_";

/// Refuses a hardware id the product does not list.
pub(crate) fn check_hardware_id(
    product: &crate::db::entities::product::Model,
    hardware_id: &str,
) -> Result<(), ServiceError> {
    let hardware_ids: Vec<String> = serde_json::from_str(&product.hardware_ids).map_err(anyhow::Error::new)?;
    if hardware_ids.iter().any(|h| h == hardware_id) {
        return Ok(());
    }
    Err(ServiceError::invalid(
        "unknown_hardware_id",
        format!("product {} has no hardware id {hardware_id:?} (known: {})", product.name, hardware_ids.join(", ")),
    ))
}

/// `devices.protocol` of a device that speaks hawkBit's device API (`services::ddi`).
pub const DDI: &str = "ddi";
/// A day: long enough to provision a batch on the factory floor, short enough that a leaked
/// token is soon useless.
pub const DEFAULT_EXPIRY_SECONDS: i64 = 24 * 60 * 60;
/// One production batch.
pub const DEFAULT_MAX_USES: i64 = 1_000;

/// An enrollment token to create.
#[derive(Debug, Clone)]
pub struct CreateEnrollmentToken {
    /// The product its devices belong to.
    pub product: String,
    /// A label for listings and the audit log.
    pub name: Option<String>,
    /// Tags given to every device that enrolls with it.
    pub tags: Vec<String>,
    /// Lifetime in seconds (default a day, at most a year).
    pub expires_in_seconds: Option<i64>,
    /// How many devices may enroll with it (default 1 000).
    pub max_uses: Option<i64>,
}

/// Creates an enrollment token; returns the row and the secret, shown once.
pub async fn create_enrollment_token(
    svc: &Services,
    caller: &Caller,
    input: CreateEnrollmentToken,
) -> Result<(enrollment_token::Model, String), ServiceError> {
    let product = product_get_by_name(&svc.db, &input.product).await?.ok_or_else(|| {
        ServiceError::not_found("unknown_product", format!("product {} does not exist", input.product))
    })?;
    let tags = parse_tags(&input.tags)?;
    let lifetime = input.expires_in_seconds.unwrap_or(DEFAULT_EXPIRY_SECONDS);
    if !(60..=366 * 24 * 3600).contains(&lifetime) {
        return Err(ServiceError::invalid("invalid_expiry", "expires_in_seconds must be between 60 and one year"));
    }
    let max_uses = input.max_uses.unwrap_or(DEFAULT_MAX_USES);
    if !(1..=10_000_000).contains(&max_uses) {
        return Err(ServiceError::invalid("invalid_max_uses", "max_uses must be between 1 and 10 000 000"));
    }
    let name = input.name.unwrap_or_else(|| format!("{}-enrollment", product.name));
    if name.trim().is_empty() || name.chars().count() > 128 {
        return Err(ServiceError::invalid("invalid_token_name", "a token name must be 1 to 128 characters"));
    }
    let (secret, shown, hash) = new_secret(ENROLLMENT_TOKEN_PREFIX);
    let now = svc.now_secs();
    let tags_json: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    let txn = crate::db::begin_write(&svc.db).await?;
    let row = enrollment_token_insert(
        &txn,
        NewEnrollmentToken {
            name: name.clone(),
            product_id: product.id,
            tags: serde_json::to_string(&tags_json).map_err(anyhow::Error::new)?,
            token_prefix: shown,
            token_hash: hash,
            max_uses,
            expires_at: now + lifetime,
            created_by: caller.name.clone(),
            created_at: now,
        },
    )
    .await?;
    let after = json!({"product": product.name, "tags": tags_json, "max_uses": max_uses, "expires_at": now + lifetime});
    record(&txn, now, caller, "enrollment_token.create", &format!("enrollment_token:{}", row.id), None, Some(after))
        .await?;
    txn.commit().await?;
    Ok((row, secret))
}

/// Every enrollment token (secrets are never stored, so never listed).
pub async fn list_enrollment_tokens(svc: &Services) -> Result<Vec<enrollment_token::Model>, ServiceError> {
    Ok(enrollment_token_list(&svc.db).await?)
}

/// Revokes enrollment token `id`: devices enrolled with it keep working.
pub async fn revoke_enrollment_token(svc: &Services, caller: &Caller, id: i64) -> Result<(), ServiceError> {
    let now = svc.now_secs();
    let txn = crate::db::begin_write(&svc.db).await?;
    if enrollment_token_get(&txn, id).await?.is_none() {
        return Err(ServiceError::not_found("unknown_enrollment_token", format!("no enrollment token has id {id}")));
    }
    if !enrollment_token_revoke(&txn, id, now).await? {
        return Err(ServiceError::conflict("already_revoked", format!("enrollment token {id} is already revoked")));
    }
    record(&txn, now, caller, "enrollment_token.revoke", &format!("enrollment_token:{id}"), None, None).await?;
    txn.commit().await?;
    svc.caches.invalidate_enrollment_tokens();
    Ok(())
}

fn envelope_error(e: patchgate_protocol::ProtocolError) -> ServiceError {
    ServiceError::from_envelope(e, "request", "invalid_request")
}

/// Enrolls (or re-enrolls) a device from a signed enrollment request.
pub async fn enroll_device(svc: &Services, body: &[u8]) -> Result<EnrollAnswer, ServiceError> {
    // Proof of possession: the request is signed by the key it names.
    let (request, key) = patchgate_protocol::open_enroll_request(body).map_err(envelope_error)?;
    let device_id = DeviceId::parse(&request.device_id)?;
    let now = svc.now_secs();

    let grant = enrollment_grant(svc, &request.enrollment_token, now).await?;
    let (token, product) = (grant.0.clone(), grant.1.clone());
    if product.name != request.product {
        return Err(ServiceError::Forbidden {
            message: format!("this enrollment token is for product {}, not {}", product.name, request.product),
        });
    }
    check_hardware_id(&product, &request.hardware_id)?;
    let (secret, shown, hash) = new_secret(DEVICE_TOKEN_PREFIX);
    let keyid = ed25519_keyid(&key.to_bytes());
    let product_name = product.name.clone();
    let new = NewDevice {
        device_id: device_id.as_str().to_owned(),
        product_id: product.id,
        hardware_id: request.hardware_id.clone(),
        public_key: hex::encode(key.to_bytes()),
        keyid: keyid.clone(),
        tags: token.tags.clone(),
        token_prefix: shown,
        token_hash: hash,
        enrollment_token_id: token.id,
        enrolled_at: now,
        enroll_time: request.time.clone(),
    };

    let enrollment = Enrollment { device_id: device_id.clone(), new, token, product, request, keyid, now };
    let (device_row, action) = svc.writes.enroll(svc, enrollment).await?;
    // A re-enrolled device's old token and key stop working here at once.
    svc.caches.invalidate_device(device_row);
    tracing::info!(device = %device_id, product = %product_name, action, "device enrolled");
    Ok(EnrollAnswer { device_id: device_id.as_str().to_owned(), device_token: secret })
}

/// The refusal of an enrollment token that is unknown, revoked or expired.
fn invalid_enrollment_token() -> ServiceError {
    ServiceError::Unauthenticated { message: "the enrollment token is invalid, expired or revoked".into() }
}

/// The enrollment token `secret` and its product, from memory when it was used before. A
/// revocation on another instance may not be seen here yet: the writer's conditional update
/// that takes a use refuses it anyway ([`token_refusal`] says why).
async fn enrollment_grant(svc: &Services, secret: &str, now: i64) -> Result<EnrollmentGrant, ServiceError> {
    use sha2::{Digest, Sha256};
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let grant = match svc.caches.enrollment_token(&digest) {
        Some(grant) => grant,
        None => {
            let ticket = svc.caches.enrollment_ticket();
            let token = enrollment_token_find_by_hash(&svc.db, &hex::encode(digest))
                .await?
                .ok_or_else(invalid_enrollment_token)?;
            let product = product_get(&svc.db, token.product_id)
                .await?
                .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("enrollment token without product")))?;
            let grant = std::sync::Arc::new((token, product));
            if grant.0.revoked_at.is_none() {
                svc.caches.fill_enrollment_token(ticket, digest, grant.clone());
            }
            grant
        }
    };
    if grant.0.revoked_at.is_some() || grant.0.expires_at <= now {
        return Err(invalid_enrollment_token());
    }
    Ok(grant)
}

/// Why token `id` gave no use at `now`: revoked or expired (as a token never seen), or used up.
async fn token_refusal(txn: &impl sea_orm::ConnectionTrait, id: i64, now: i64) -> ServiceError {
    match enrollment_token_get(txn, id).await {
        Ok(Some(t)) if t.revoked_at.is_none() && t.expires_at > now => {
            ServiceError::Unauthenticated { message: "the enrollment token has no uses left".into() }
        }
        Ok(_) => invalid_enrollment_token(),
        Err(e) => e.into(),
    }
}

/// An enrollment that passed every check that needs no transaction.
#[derive(Debug)]
pub struct Enrollment {
    device_id: DeviceId,
    new: NewDevice,
    token: enrollment_token::Model,
    product: crate::db::entities::product::Model,
    request: patchgate_protocol::report::EnrollRequest,
    keyid: String,
    now: i64,
}

/// The audit action of a first enrollment.
pub const ENROLL: &str = "device.enroll";
/// The audit action of a re-enrollment.
const REENROLL: &str = "device.reenroll";

/// The audit entry's actor for enrollments with `token`.
fn enroller(token: &enrollment_token::Model, product: &str) -> Caller {
    Caller {
        name: format!("enrollment_token:{}", token.name),
        role: super::auth::Role::Viewer,
        product: Some(product.to_owned()),
    }
}

/// What the audit log says a device enrolled with.
fn enrolled_with(unit: &Enrollment) -> serde_json::Value {
    json!({"product": unit.product.name, "hardware_id": unit.request.hardware_id, "keyid": unit.keyid,
        "tags": serde_json::from_str::<serde_json::Value>(&unit.token.tags).unwrap_or_default()})
}

/// Stores first enrollments of new devices together, with a fixed number of statements
/// whatever their number: one query for existing devices, one update per enrollment token for
/// its uses, one insert each for the devices, their director roles and the audit entries. The
/// first director roles (empty targets, version 1) name no device, so one signing serves all.
/// Returns each enrollment's device row, or `None` where it must take [`enroll_in`] alone (the
/// device exists, or appears twice, or its token has too few uses left).
pub async fn enroll_batch(
    txn: &impl sea_orm::ConnectionTrait,
    svc: &Services,
    units: &[&Enrollment],
) -> Result<Vec<Option<i64>>, ServiceError> {
    use std::collections::{HashMap, HashSet};
    let mut rows = vec![None; units.len()];
    let mut seen = HashSet::new();
    let mut candidates: Vec<usize> = (0..units.len()).filter(|&i| seen.insert(units[i].device_id.as_str())).collect();
    let existing: HashSet<String> =
        devices_find_many(txn, candidates.iter().map(|&i| units[i].device_id.as_str().to_owned()).collect())
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
    candidates.retain(|&i| !existing.contains(units[i].device_id.as_str()));
    let mut per_token: HashMap<i64, Vec<usize>> = HashMap::new();
    for &i in &candidates {
        per_token.entry(units[i].token.id).or_default().push(i);
    }
    let mut taken = Vec::new();
    for (token, members) in per_token {
        let now = members.iter().map(|&i| units[i].now).max().unwrap_or_default();
        let count = i64::try_from(members.len()).unwrap_or(i64::MAX);
        if enrollment_token_take_uses(txn, token, count, now).await? {
            taken.extend(members);
        }
    }
    if taken.is_empty() {
        return Ok(rows);
    }
    taken.sort_unstable();
    let key = director_online_signer(txn, svc).await?;
    let signed_at = svc.clock.now();
    let first = units[taken[0]].device_id.as_str();
    let (roles, signed) = sign_new_roles(&key, first, [0; 3], None, signed_at).await?;
    let version = i64::try_from(signed.targets_version).unwrap_or(i64::MAX);
    let inserted =
        devices_insert_signed(txn, taken.iter().map(|&i| units[i].new.clone()).collect(), version, signed.refresh_at)
            .await?;
    let row_of: HashMap<String, i64> = inserted.into_iter().map(|d| (d.device_id, d.id)).collect();
    let [targets, snapshot, timestamp] = &roles;
    let mut metadata = Vec::with_capacity(3 * taken.len());
    let mut actors = Vec::with_capacity(taken.len());
    for &i in &taken {
        let unit = units[i];
        let row = *row_of
            .get(unit.device_id.as_str())
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("device {} was not stored", unit.device_id)))?;
        metadata.extend(metadata_rows(row, &[targets, snapshot, timestamp], signed_at));
        actors.push((
            enroller(&unit.token, &unit.product.name).name,
            format!("device:{}", unit.device_id),
            enrolled_with(unit).to_string(),
        ));
        rows[i] = Some(row);
    }
    device_metadata_insert_many(txn, metadata).await?;
    let entries = taken
        .iter()
        .zip(&actors)
        .map(|(&i, (actor, object, after))| NewAudit {
            at: units[i].now,
            actor,
            action: ENROLL,
            object,
            before: None,
            after: Some(after.clone()),
        })
        .collect();
    audit_insert_many(txn, entries).await?;
    Ok(rows)
}

/// Stores one enrollment (a first one, or a re-enrollment) inside a group-commit transaction;
/// the device row and the audit action.
pub async fn enroll_in(
    txn: &sea_orm::DatabaseTransaction,
    svc: &Services,
    unit: &Enrollment,
) -> Result<(i64, &'static str), ServiceError> {
    let Enrollment { device_id, new, token, product, request, keyid, now } = unit;
    let now = *now;
    let existing = device_find(txn, device_id.as_str()).await?;
    let (device, action) = match existing {
        None => (device_insert(txn, new.clone()).await?, ENROLL),
        Some(row) => {
            if row.status != "active" {
                return Err(ServiceError::conflict(
                    "device_decommissioned",
                    format!("device {device_id} was decommissioned and cannot enroll again"),
                ));
            }
            if row.product_id != product.id {
                return Err(ServiceError::conflict(
                    "device_product_mismatch",
                    format!("device {device_id} is enrolled in another product"),
                ));
            }
            // Times are validated `YYYY-MM-DDTHH:MM:SSZ`, so text order is time order.
            if request.time <= row.enroll_time {
                return Err(ServiceError::conflict(
                    "stale_enrollment",
                    format!(
                        "device {device_id} last enrolled with a request dated {}; a new enrollment must carry a later time",
                        row.enroll_time
                    ),
                ));
            }
            if &row.keyid != keyid && !row.rekey_allowed {
                return Err(ServiceError::conflict(
                    "device_key_conflict",
                    format!("device {device_id} is enrolled with another key; an admin must allow a new key first"),
                ));
            }
            (device_reenroll(txn, row, new.clone()).await?, REENROLL)
        }
    };
    if !enrollment_token_take_use(txn, token.id, now).await? {
        return Err(token_refusal(txn, token.id, now).await);
    }
    if device.director_targets_version == 0 {
        // The device can refresh its director repository at once: empty targets, version 1.
        let signed = sign_device_metadata(txn, svc, &device, None, svc.clock.now()).await?;
        crate::db::devices::device_set_director_version(txn, device.id, signed.targets_version, signed.refresh_at)
            .await?;
    }
    let after = enrolled_with(unit);
    record(txn, now, &enroller(token, &product.name), action, &format!("device:{device_id}"), None, Some(after))
        .await?;
    Ok((device.id, action))
}

/// The device a device token belongs to; decommissioned devices get no service.
pub async fn authenticate_device(
    svc: &Services,
    token: &str,
) -> Result<std::sync::Arc<super::caches::DeviceIdentity>, ServiceError> {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let unauthenticated = || ServiceError::Unauthenticated { message: "the device token is invalid".into() };
    if !token.starts_with(DEVICE_TOKEN_PREFIX) {
        return Err(unauthenticated());
    }
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // The map is keyed by the token's SHA-256, so a hit is an exact match of the whole token.
    if let Some(known) = svc.caches.device_token(&digest) {
        return Ok(known);
    }
    let ticket = svc.caches.device_token_ticket();
    let hash = hex::encode(digest);
    let device = crate::db::devices::device_find_by_token_hash(&svc.db, &hash).await?.ok_or_else(unauthenticated)?;
    let same: bool = device.token_hash.as_bytes().ct_eq(hash.as_bytes()).into();
    if !same {
        return Err(unauthenticated());
    }
    let identity = identity_of(device)?;
    svc.caches.fill_device_token(ticket, digest, identity.clone());
    Ok(identity)
}

/// Who an authenticated device is, from its row: refused if decommissioned; its key parsed
/// once (none for a DDI device).
pub(crate) fn identity_of(
    device: crate::db::entities::device::Model,
) -> Result<std::sync::Arc<super::caches::DeviceIdentity>, ServiceError> {
    if device.status != "active" {
        return Err(ServiceError::Forbidden { message: format!("device {} is decommissioned", device.device_id) });
    }
    let key = match device.protocol.as_str() {
        DDI => None,
        _ => Some(
            patchgate_protocol::parse_public_key_hex(&device.public_key)
                .map_err(|e| ServiceError::Internal(anyhow::anyhow!("stored device key: {e}")))?,
        ),
    };
    Ok(std::sync::Arc::new(super::caches::DeviceIdentity {
        id: device.id,
        device_id: device.device_id,
        product_id: device.product_id,
        key,
    }))
}
