//! Parsed identifiers of the fleet: device ids, tags, cohort names and rollout ids.

use std::fmt;

use super::names::NameError;

fn is_slug(raw: &str) -> bool {
    (1..=64).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

macro_rules! slug_type {
    ($name:ident, $what:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `[a-z0-9._:-]{1,64}`.
            pub fn parse(raw: &str) -> Result<Self, NameError> {
                if is_slug(raw) { Ok(Self(raw.to_owned())) } else { Err(NameError::Slug($what, raw.to_owned())) }
            }

            /// The value as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

slug_type!(Tag, "tag", "An admin-set device tag such as `region:eu` (devices never choose their own).");
slug_type!(CohortName, "cohort name", "A cohort's name, unique within its product.");
slug_type!(RolloutId, "rollout id", "A rollout's id: part of every device's bucket, so it never changes.");

/// A device's id, chosen by the manufacturer (usually a serial number).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    /// Validates `[A-Za-z0-9._-]{1,128}`, refusing `.` and `..` (ids appear in URL paths).
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let ok = (1..=128).contains(&raw.len())
            && raw != "."
            && raw != ".."
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok { Ok(Self(raw.to_owned())) } else { Err(NameError::DeviceId(raw.to_owned())) }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses, sorts and de-duplicates a list of tags.
pub fn parse_tags(raw: &[String]) -> Result<Vec<Tag>, NameError> {
    let mut tags = raw.iter().map(|t| Tag::parse(t)).collect::<Result<Vec<_>, _>>()?;
    tags.sort();
    tags.dedup();
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_and_refuse() {
        assert!(DeviceId::parse("pump-0001").is_ok());
        assert!(DeviceId::parse("SN.12_ab").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Tag::parse("region:eu").is_ok());
        assert!(Tag::parse("Region").is_err());
        assert!(RolloutId::parse("r-2026-11").is_ok());
        assert!(CohortName::parse("").is_err());
        let tags = parse_tags(&["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(tags.iter().map(Tag::as_str).collect::<Vec<_>>(), ["a", "b"]);
    }
}
