//! The OpenAPI schemas of the names and keys the API parses (`domain/names.rs`, `domain/ids.rs`),
//! so that the document says what the server accepts: a request the schema allows is not
//! refused for its spelling, and one it forbids is refused. Each pattern is tested against its
//! parser below. Two differences, both stated in the schemas: product names exclude TUF's four
//! role names (in the description, as a regex without look-ahead cannot say it briefly), and
//! versions allow at most 19 digits per number.
//!
//! The schemas belong to the domain types themselves; fields that stay `String` in Rust name
//! them with `value_type`.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use crate::domain::ids::{CohortName, DeviceId, RolloutId, Tag};
use crate::domain::names::{FirmwareVersion, HardwareId, ProductName};
use crate::domain::rollout::RolloutState;

macro_rules! pattern_schema {
    ($name:ty, $pattern:expr, $doc:expr) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new().schema_type(Type::String).pattern(Some($pattern)).description(Some($doc)).into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

const PRODUCT: &str = "^[a-z0-9-]{1,64}$";
const SLUG: &str = "^[a-z0-9._:-]{1,64}$";
const SLUG_TEXT: &str = "1 to 64 of a-z, 0-9, '.', '_', ':' and '-'";
// Three alternatives instead of a look-ahead: an id is not `.` or `..`.
const ID: &str =
    "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,127}|[.][A-Za-z0-9_-][A-Za-z0-9._-]{0,126}|[.][.][A-Za-z0-9._-]{1,126})$";
const ID_TEXT: &str = "1 to 128 of A-Z, a-z, 0-9, '.', '_' and '-', not '.' or '..'";
// Semantic versioning's own grammar without build metadata. Major, minor and patch are at most 19
// digits (the parser takes up to 2^64 - 1, 20 digits): the one place the schema is stricter.
const VERSION: &str = concat!(
    "^(0|[1-9][0-9]{0,18})[.](0|[1-9][0-9]{0,18})[.](0|[1-9][0-9]{0,18})",
    "(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)([.](0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?$"
);
const PUBLIC_KEY: &str = "^[0-9a-fA-F]{64}$";

pattern_schema!(
    ProductName,
    PRODUCT,
    "A product name: 1 to 64 of a-z, 0-9 and '-' (not root, targets, snapshot or timestamp)."
);
pattern_schema!(Tag, SLUG, &format!("A device tag such as region:eu: {SLUG_TEXT}."));
pattern_schema!(CohortName, SLUG, &format!("A cohort name: {SLUG_TEXT}."));
pattern_schema!(RolloutId, SLUG, &format!("A rollout id: {SLUG_TEXT}."));
pattern_schema!(DeviceId, ID, &format!("A device id: {ID_TEXT}."));
pattern_schema!(HardwareId, ID, &format!("A hardware id: {ID_TEXT}."));
pattern_schema!(FirmwareVersion, VERSION, "A semantic version such as 1.4.2 or 2.0.0-rc.1, without build metadata.");

impl utoipa::PartialSchema for RolloutState {
    fn schema() -> RefOr<Schema> {
        let names = RolloutState::ALL.map(RolloutState::as_str);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some("A rollout's state."))
            .into()
    }
}

impl utoipa::ToSchema for RolloutState {}

/// A raw ed25519 public key in hex (document-only: the API parses it where it is used).
pub struct PublicKeyHex;
pattern_schema!(PublicKeyHex, PUBLIC_KEY, "A raw ed25519 public key: 64 hex characters.");

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;

    fn agree(pattern: &str, parses: impl Fn(&str) -> bool, samples: &[&str]) {
        let re = Regex::new(pattern).unwrap();
        for s in samples {
            assert_eq!(re.is_match(s), parses(s), "{pattern} and the parser disagree on {s:?}");
        }
    }

    #[test]
    fn each_pattern_accepts_what_its_parser_accepts() {
        let long = "a".repeat(64);
        let longer = "a".repeat(65);
        let ids =
            ["a", ".", "..", ".a", "..a", "...", "a.", "A-b_c.d", &"a".repeat(128), &"a".repeat(129), "a/b", "é", ""];
        agree(
            PRODUCT,
            |s| ProductName::parse(s).is_ok() || ["root", "targets", "snapshot", "timestamp"].contains(&s),
            &["pump-x1", "a", "0", &long, &longer, "", "Pump", "pump_x1", "a.b"],
        );
        agree(SLUG, |s| Tag::parse(s).is_ok(), &["region:eu", "a.b_c-d", &long, &longer, "", "A", "a b", "a/b"]);
        agree(ID, |s| DeviceId::parse(s).is_ok(), &ids);
        agree(ID, |s| HardwareId::parse(s).is_ok(), &ids);
        agree(
            PUBLIC_KEY,
            |s| s.len() == 64 && hex::decode(s).is_ok(),
            &[&"ab".repeat(32), &"AB".repeat(32), &"a".repeat(63), &"g".repeat(64)],
        );
        let versions = [
            "1.4.2",
            "0.0.0",
            "2.0.0-rc.1",
            "1.0.0-alpha-1.0a",
            "1.0.0-0",
            "01.0.0",
            "1.0",
            "1.0.0+b",
            "1.0.0-",
            "1.0.0-01",
            "v1.0.0",
            "1.0.0-a..b",
            "9999999999999999999.0.0",
            "1.0.0-99999999999999999999999",
            " 1.0.0",
        ];
        agree(VERSION, |s| FirmwareVersion::parse(s).is_ok(), &versions);
        // The one difference: a 20-digit number the parser takes.
        assert!(FirmwareVersion::parse("18446744073709551615.0.0").is_ok());
        assert!(!Regex::new(VERSION).unwrap().is_match("18446744073709551615.0.0"));
    }
}
