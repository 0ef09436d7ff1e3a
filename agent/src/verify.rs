//! The cross-check that decides whether a device may install what its director assigns
//! (docs/design.md §2.5 and §2.7): a pure function of already TUF-verified metadata.
//!
//! tough has verified both repositories' signatures, thresholds, versions and expiry by the time
//! this runs; what TUF cannot know is that the two repositories must agree. The director's
//! targets hold at most one target, no delegations, and `custom.device_id` equal to this device;
//! the image repository must list a target of the same name with identical length, hashes and
//! `custom` (the director adds only `device_id`, `rollout_id`, `action`), for this product and
//! hardware; and the version rules forbid unmarked downgrades and anything below the installed
//! release's `rollback_floor`. Must not do I/O.
//!
//! The product's security floor is the highest `custom.rollback_floor` of any release the
//! product's delegated role lists (under its own delegated paths): publishing a release with a
//! higher floor raises it for every device, installed or not, so a target below it is refused
//! whatever the director's `action`, even on a device that never installed that release.
//!
//! Refusal codes (stable; sent in the `rejected` report's detail): `director_delegations`,
//! `director_target_count`, `invalid_director_custom`, `wrong_device`, `invalid_target_name`,
//! `not_in_image_repository`, `image_mismatch`, `custom_mismatch`, `invalid_image_custom`,
//! `wrong_hardware`, `wrong_product`, `below_security_floor`, `below_rollback_floor`,
//! `unmarked_downgrade`.

use std::collections::HashMap;

use patchgate_protocol::{DirectorAction, ProtocolError, check_director_custom, split_director_custom};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tough::TargetName;
use tough::schema::{Target, Targets};

use crate::error::Refusal;
use crate::state::InstalledRecord;

/// A target the director assigned and the image repository confirmed, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assigned {
    /// TUF target name, e.g. `pump-x1/1.1.0/fw.bin`.
    pub name: String,
    /// Release version (from the image repository's `custom`).
    pub version: String,
    /// Exact length in bytes.
    pub length: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// SHA-512, lowercase hex, where the image repository publishes it.
    pub sha512: Option<String>,
    /// `install` or `rollback`.
    pub action: DirectorAction,
    /// The rollout that assigned it.
    pub rollout_id: String,
    /// The release's own floor, which becomes the device's once installed.
    pub rollback_floor: String,
}

/// Who the device is, as enrolled.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// Device id.
    pub device_id: &'a str,
    /// Product name.
    pub product: &'a str,
    /// Hardware id.
    pub hardware_id: &'a str,
}

/// What the device should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing assigned, or the assigned image is the one running.
    Nothing,
    /// Install this verified target.
    Install(Assigned),
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

fn to_map(custom: &HashMap<String, Value>) -> Map<String, Value> {
    custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Decides what to do with the director's (verified) targets, given the image repository's
/// (verified) top-level targets with its delegations loaded, and the installed image.
pub fn decide(
    director: &Targets,
    image: &Targets,
    me: Identity<'_>,
    installed: Option<&InstalledRecord>,
) -> Result<Decision, Refusal> {
    if director.delegations.as_ref().is_some_and(|d| !d.roles.is_empty() || !d.keys.is_empty()) {
        return Err(refuse("director_delegations", "the director's targets metadata delegates; it must not"));
    }
    let (name, target) = match director.targets.len() {
        0 => return Ok(Decision::Nothing),
        1 => director.targets.iter().next().ok_or_else(|| refuse("director_target_count", "no target"))?,
        n => {
            return Err(refuse(
                "director_target_count",
                format!("the director lists {n} targets; at most one is allowed"),
            ));
        }
    };
    let name_str = name.raw().to_owned();
    let director_custom = to_map(&target.custom);
    let (_, fields) = split_director_custom(&director_custom)
        .map_err(|e| refuse("invalid_director_custom", format!("{name_str}: {e}")))?;
    if fields.device_id != me.device_id {
        return Err(refuse(
            "wrong_device",
            format!("the director's target is for device {:?}, this is {:?}", fields.device_id, me.device_id),
        ));
    }
    check_name_shape(name)?;
    let image_target = find_image_target(image, me.product, name)?;
    check_same_bytes(&name_str, target, image_target)?;
    let image_custom = to_map(&image_target.custom);
    check_director_custom(&director_custom, &image_custom).map_err(|e| match e {
        ProtocolError::DirectorCustomMismatch => {
            refuse("custom_mismatch", format!("{name_str}: the director's custom differs from the image repository's"))
        }
        other => refuse("invalid_director_custom", format!("{name_str}: {other}")),
    })?;
    let custom: patchgate_protocol::TargetCustom = serde_json::from_value(Value::Object(image_custom))
        .map_err(|e| refuse("invalid_image_custom", format!("{name_str}: {e}")))?;
    if !custom.hardware_ids.iter().any(|h| h == me.hardware_id) {
        return Err(refuse(
            "wrong_hardware",
            format!("{name_str} is for hardware {:?}, this device is {:?}", custom.hardware_ids, me.hardware_id),
        ));
    }
    if name_str.split('/').next() != Some(me.product) {
        return Err(refuse("wrong_product", format!("{name_str} is not an image of product {}", me.product)));
    }
    let sha256 = hex::encode(&target.hashes.sha256);
    if installed.is_some_and(|i| i.sha256 == sha256) {
        return Ok(Decision::Nothing);
    }
    let version = parse_version("version", &custom.version)?;
    let floor = parse_version("rollback_floor", &custom.rollback_floor)?;
    if let Some((security_floor, set_by)) = security_floor(image, me.product)
        && version < security_floor
    {
        return Err(refuse(
            "below_security_floor",
            format!("{version} is below the security floor {security_floor} set by {set_by}"),
        ));
    }
    if let Some(installed) = installed {
        check_version_rules(&version, fields.action, installed)?;
    }
    let sha512 = target.hashes._extra.get("sha512").and_then(Value::as_str).map(str::to_owned);
    Ok(Decision::Install(Assigned {
        name: name_str,
        version: version.to_string(),
        length: target.length,
        sha256,
        sha512,
        action: fields.action,
        rollout_id: fields.rollout_id,
        rollback_floor: floor.to_string(),
    }))
}

/// A target name the agent will use in a URL and compare by prefix: `/`-separated segments,
/// none empty, `.` or `..`, no backslash (tough resolves `..` when matching delegations, so a
/// name like `pump-x1/../syringe-s2/…` could otherwise be signed by another product's key).
fn check_name_shape(name: &TargetName) -> Result<(), Refusal> {
    if plain_name(name) {
        Ok(())
    } else {
        Err(refuse("invalid_target_name", format!("{:?} is not a plain target path", name.raw())))
    }
}

/// Whether `name` is a plain target path (see [`check_name_shape`]).
pub(crate) fn plain_name(name: &TargetName) -> bool {
    let raw = name.raw();
    raw == name.resolved()
        && !raw.contains('\\')
        && raw.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// The role the image repository's top-level targets delegates `product` to (its targets are
/// signed by that product's key), once tough has loaded it.
pub fn product_role<'a>(image: &'a Targets, product: &str) -> Option<&'a tough::schema::DelegatedRole> {
    image.delegations.as_ref().and_then(|d| d.roles.iter().find(|r| r.name == product))
}

/// The image repository's `custom` of `target`, typed.
pub fn target_custom(target: &Target) -> Result<patchgate_protocol::TargetCustom, serde_json::Error> {
    serde_json::from_value(Value::Object(to_map(&target.custom)))
}

/// The target in the image repository's role for `product` (the role the top-level targets
/// delegates `{product}/*/*` to, signed by the product's key), and nowhere else.
fn find_image_target<'a>(image: &'a Targets, product: &str, name: &TargetName) -> Result<&'a Target, Refusal> {
    let missing = || {
        refuse(
            "not_in_image_repository",
            format!("{} is not signed into the image repository by the key of product {product}", name.raw()),
        )
    };
    let role = product_role(image, product).ok_or_else(missing)?;
    if !crate::tuf::delegates(role, name) {
        return Err(missing());
    }
    role.targets.as_ref().and_then(|t| t.signed.targets.get(name)).ok_or_else(missing)
}

/// The product's security floor: the highest `custom.rollback_floor` among the targets the
/// image repository's role for `product` lists under its own delegated paths, and the name of
/// the release that set it (of several with that floor, the lowest version, then the first
/// name). Entries whose `custom` or floor does not parse are skipped; `None` if no entry counts.
fn security_floor(image: &Targets, product: &str) -> Option<(Version, String)> {
    let role = product_role(image, product)?;
    let listed = &role.targets.as_ref()?.signed.targets;
    listed
        .iter()
        .filter(|(name, _)| crate::tuf::delegates(role, name))
        .filter_map(|(name, target)| {
            let custom = target_custom(target).ok()?;
            let floor = Version::parse(&custom.rollback_floor).ok()?;
            Some((floor, Version::parse(&custom.version).ok(), name.raw()))
        })
        // Highest floor; among equal floors the lowest release version (an unparseable one
        // last), then the first name, so the message does not depend on map order.
        .min_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.is_none().cmp(&b.1.is_none()))
                .then_with(|| a.1.cmp(&b.1))
                .then_with(|| a.2.cmp(b.2))
        })
        .map(|(floor, _, name)| (floor, name.to_owned()))
}

fn check_same_bytes(name: &str, director: &Target, image: &Target) -> Result<(), Refusal> {
    if director.length != image.length {
        return Err(refuse(
            "image_mismatch",
            format!("{name}: the director says {} bytes, the image repository {}", director.length, image.length),
        ));
    }
    let hashes = |t: &Target| serde_json::to_value(&t.hashes).unwrap_or(Value::Null);
    if hashes(director) != hashes(image) || director.hashes.sha256 != image.hashes.sha256 {
        return Err(refuse(
            "image_mismatch",
            format!("{name}: the director's hashes differ from the image repository's"),
        ));
    }
    Ok(())
}

fn parse_version(field: &str, s: &str) -> Result<Version, Refusal> {
    Version::parse(s).map_err(|e| refuse("invalid_image_custom", format!("{field} {s:?} is not a version: {e}")))
}

fn check_version_rules(target: &Version, action: DirectorAction, installed: &InstalledRecord) -> Result<(), Refusal> {
    let floor = parse_version("installed rollback_floor", &installed.rollback_floor)?;
    if target < &floor {
        return Err(refuse(
            "below_rollback_floor",
            format!("{target} is below the rollback floor {floor} of the installed {}", installed.version),
        ));
    }
    let running = parse_version("installed version", &installed.version)?;
    if target < &running && action != DirectorAction::Rollback {
        return Err(refuse(
            "unmarked_downgrade",
            format!("{target} is older than the installed {running} and the director did not mark it as a rollback"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
