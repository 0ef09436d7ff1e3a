//! The director's target `custom`: the image repository's `custom`, repeated exactly, plus the
//! director's three keys.
//!
//! Owns the split of authority between the two repositories. The image repository alone says
//! what a target is (version, hardware ids, rollback floor: [`TargetCustom`](crate::TargetCustom));
//! the director only says who gets it and why, in `device_id`, `rollout_id` and `action`. An agent
//! must split the director's `custom` with [`split_director_custom`] and compare the image part
//! for equality with the image repository's `custom` of the same target ([`check_director_custom`]
//! does both): otherwise a compromised director could change what an image claims to be. Must not
//! depend on the server crate or tough.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ProtocolError;

/// Why the director assigns a target to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectorAction {
    /// Move forward to the target, as a rollout stage assigns it.
    Install,
    /// Go back to the target the device ran before a rolled-back release.
    Rollback,
}

impl DirectorAction {
    /// The wire spelling: `install` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Rollback => "rollback",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Install, Self::Rollback].into_iter().find(|action| action.as_str() == s)
    }
}

/// The only keys the director adds to a target's `custom`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorFields {
    /// The device the targets metadata is for.
    pub device_id: String,
    /// The rollout that made the assignment.
    pub rollout_id: String,
    /// Install or rollback.
    pub action: DirectorAction,
}

const DEVICE_ID: &str = "device_id";
const ROLLOUT_ID: &str = "rollout_id";
const ACTION: &str = "action";

/// The director's `custom` for a target: `image_custom` unchanged plus the three director keys.
///
/// Fails with [`ProtocolError::InvalidField`] if `image_custom` already has one of those keys,
/// since the agent could then not tell who said what.
pub fn director_custom(
    image_custom: &Map<String, Value>,
    fields: &DirectorFields,
) -> Result<Map<String, Value>, ProtocolError> {
    if let Some(key) = [DEVICE_ID, ROLLOUT_ID, ACTION].into_iter().find(|key| image_custom.contains_key(*key)) {
        return Err(ProtocolError::InvalidField {
            field: key,
            reason: "reserved for the director but present in the image repository's custom".to_owned(),
        });
    }
    let mut custom = image_custom.clone();
    custom.insert(DEVICE_ID.to_owned(), Value::String(fields.device_id.clone()));
    custom.insert(ROLLOUT_ID.to_owned(), Value::String(fields.rollout_id.clone()));
    custom.insert(ACTION.to_owned(), Value::String(fields.action.as_str().to_owned()));
    Ok(custom)
}

/// Splits a director target's `custom` into the image part and the director's fields.
///
/// Fails with [`ProtocolError::InvalidField`] if a director key is missing or not a string, or
/// `action` is neither `install` nor `rollback`. The image part is NOT checked here: compare it
/// with the image repository's `custom` (or use [`check_director_custom`]).
pub fn split_director_custom(
    custom: &Map<String, Value>,
) -> Result<(Map<String, Value>, DirectorFields), ProtocolError> {
    let mut image = custom.clone();
    let mut take = |field: &'static str| match image.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ProtocolError::InvalidField { field, reason: "must be a string".to_owned() }),
        None => Err(ProtocolError::InvalidField { field, reason: "missing from the director's custom".to_owned() }),
    };
    let device_id = take(DEVICE_ID)?;
    let rollout_id = take(ROLLOUT_ID)?;
    let action = take(ACTION)?;
    let action = DirectorAction::parse(&action).ok_or_else(|| ProtocolError::InvalidField {
        field: ACTION,
        reason: format!("must be \"install\" or \"rollback\", not {action:?}"),
    })?;
    Ok((image, DirectorFields { device_id, rollout_id, action }))
}

/// What an agent runs on each director target: splits `director_custom` and requires its image
/// part to equal `image_custom`, the image repository's `custom` for the same target.
///
/// Fails with [`ProtocolError::DirectorCustomMismatch`] on any difference, including a key the
/// director added or dropped.
pub fn check_director_custom(
    director_custom: &Map<String, Value>,
    image_custom: &Map<String, Value>,
) -> Result<DirectorFields, ProtocolError> {
    let (image_part, fields) = split_director_custom(director_custom)?;
    if &image_part == image_custom { Ok(fields) } else { Err(ProtocolError::DirectorCustomMismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TargetCustom;
    use serde_json::json;

    fn image_custom() -> Map<String, Value> {
        let custom = TargetCustom {
            version: "1.1.0".into(),
            hardware_ids: vec!["pump-x1-revA".into(), "pump-x1-revB".into()],
            rollback_floor: "1.0.0".into(),
            released_at: "2026-11-24T10:00:00Z".into(),
        };
        as_map(serde_json::to_value(custom).unwrap())
    }

    fn fields() -> DirectorFields {
        DirectorFields {
            device_id: "pump-0001".into(),
            rollout_id: "r-2026-11-eu".into(),
            action: DirectorAction::Rollback,
        }
    }

    fn as_map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn director_custom_adds_exactly_three_keys_and_splits_back() {
        let custom = director_custom(&image_custom(), &fields()).unwrap();
        let mut expected = serde_json::to_value(image_custom()).unwrap();
        expected["device_id"] = json!("pump-0001");
        expected["rollout_id"] = json!("r-2026-11-eu");
        expected["action"] = json!("rollback");
        assert_eq!(Value::Object(custom.clone()), expected);
        assert_eq!(split_director_custom(&custom).unwrap(), (image_custom(), fields()));
        assert_eq!(check_director_custom(&custom, &image_custom()).unwrap(), fields());
    }

    #[test]
    fn image_custom_with_a_director_key_is_refused() {
        for key in ["device_id", "rollout_id", "action"] {
            let mut image = image_custom();
            image.insert(key.to_owned(), json!("x"));
            let err = director_custom(&image, &fields()).unwrap_err();
            assert!(matches!(err, ProtocolError::InvalidField { field, .. } if field == key), "{key}: {err:?}");
        }
    }

    #[test]
    fn split_refuses_missing_or_mistyped_director_keys() {
        let full = director_custom(&image_custom(), &fields()).unwrap();
        for key in ["device_id", "rollout_id", "action"] {
            let mut missing = full.clone();
            missing.remove(key);
            let mut mistyped = full.clone();
            mistyped.insert(key.to_owned(), json!(1));
            for custom in [missing, mistyped] {
                let err = split_director_custom(&custom).unwrap_err();
                assert!(matches!(err, ProtocolError::InvalidField { field, .. } if field == key), "{key}: {err:?}");
            }
        }
        let mut unknown_action = full;
        unknown_action.insert("action".into(), json!("downgrade"));
        assert!(matches!(
            split_director_custom(&unknown_action),
            Err(ProtocolError::InvalidField { field: "action", .. })
        ));
    }

    #[test]
    fn any_change_to_the_image_part_is_a_mismatch() {
        let image = image_custom();
        let director = director_custom(&image, &fields()).unwrap();
        let changes: [fn(&mut Map<String, Value>); 4] = [
            |c| drop(c.insert("version".into(), json!("9.9.9"))),
            |c| drop(c.insert("hardware_ids".into(), json!(["pump-x1-revA", "pump-x1-revB", "pump-x2"]))),
            |c| drop(c.remove("rollback_floor")),
            |c| drop(c.insert("note".into(), json!("added by the director"))),
        ];
        for change in changes {
            let mut tampered = director.clone();
            change(&mut tampered);
            assert_eq!(check_director_custom(&tampered, &image), Err(ProtocolError::DirectorCustomMismatch));
        }
        let install = as_map(json!({"action": "install", "device_id": "d", "rollout_id": "r"}));
        assert_eq!(check_director_custom(&install, &Map::new()).unwrap().action, DirectorAction::Install);
    }
}
