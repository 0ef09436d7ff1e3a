//! Parsed, validated names: products, firmware versions, file names, target names.

use std::fmt;

/// A name that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Product names are `[a-z0-9-]{1,64}`.
    #[error("product name {0:?} must be 1 to 64 characters of a-z, 0-9 and '-'")]
    Product(String),
    /// Versions are semantic versions.
    #[error("version {0:?} is not a semantic version (e.g. 1.4.2): {1}")]
    Version(String, String),
    /// File names are `[A-Za-z0-9._-]{1,128}` and not `.` or `..`.
    #[error("file name {0:?} must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    FileName(String),
    /// Hardware ids follow the file-name alphabet.
    #[error("hardware id {0:?} must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    HardwareId(String),
    /// Device ids follow the file-name alphabet (they appear in URL paths).
    #[error("device id {0:?} must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    DeviceId(String),
    /// Tags, cohort names and rollout ids are short lowercase slugs.
    #[error("{0} {1:?} must be 1 to 64 characters of a-z, 0-9, '-', '_', '.' and ':'")]
    Slug(&'static str, String),
}

impl NameError {
    /// The stable API error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            NameError::Product(_) => "invalid_product_name",
            NameError::Version(..) => "invalid_version",
            NameError::FileName(_) => "invalid_file_name",
            NameError::HardwareId(_) => "invalid_hardware_id",
            NameError::DeviceId(_) => "invalid_device_id",
            NameError::Slug("tag", _) => "invalid_tag",
            NameError::Slug("cohort name", _) => "invalid_cohort_name",
            NameError::Slug(..) => "invalid_rollout_id",
        }
    }
}

/// A product name, also the name of its delegated TUF role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductName(String);

impl ProductName {
    /// Validates `[a-z0-9-]{1,64}`.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let ok = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        // Role names that TUF reserves would collide with top-level metadata files.
        let reserved = matches!(raw, "root" | "targets" | "snapshot" | "timestamp");
        if ok && !reserved { Ok(Self(raw.to_owned())) } else { Err(NameError::Product(raw.to_owned())) }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A firmware version: a semantic version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FirmwareVersion(semver::Version);

impl FirmwareVersion {
    /// Parses a semantic version such as `1.4.2` or `2.0.0-rc.1`.
    ///
    /// Build metadata (`+build.1`) is refused: semver ignores it for ordering, so `1.3.0+a` and
    /// `1.3.0+b` would be two releases of one version, and floors and downgrades ambiguous.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let version = semver::Version::parse(raw).map_err(|e| NameError::Version(raw.to_owned(), e.to_string()))?;
        if !version.build.is_empty() {
            return Err(NameError::Version(raw.to_owned(), "build metadata (+…) is not allowed".into()));
        }
        Ok(Self(version))
    }

    /// The lowest version, used as the default rollback floor.
    pub fn zero() -> Self {
        Self(semver::Version::new(0, 0, 0))
    }
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn is_file_name(raw: &str) -> bool {
    (1..=128).contains(&raw.len())
        && raw != "."
        && raw != ".."
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The file name part of a target name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    /// Validates `[A-Za-z0-9._-]{1,128}`, refusing `.` and `..`.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if is_file_name(raw) { Ok(Self(raw.to_owned())) } else { Err(NameError::FileName(raw.to_owned())) }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A hardware id a product's images run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareId(String);

impl HardwareId {
    /// Validates the file-name alphabet, 1 to 128 characters.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if is_file_name(raw) { Ok(Self(raw.to_owned())) } else { Err(NameError::HardwareId(raw.to_owned())) }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The TUF target name of a release: `{product}/{version}/{filename}`.
pub fn target_name(product: &ProductName, version: &FirmwareVersion, file: &FileName) -> String {
    format!("{}/{}/{}", product.as_str(), version, file.as_str())
}

/// The delegation path pattern for a product's role.
///
/// `{product}/*/*` rather than `{product}/*`: python-tuf matches patterns segment by segment
/// (a `*` never crosses a `/`), so a one-star pattern would not cover the three-segment target
/// names `{product}/{version}/{file}`. tough's glob matches both ways.
pub fn delegation_pattern(product: &ProductName) -> String {
    format!("{}/*/*", product.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_names() {
        for ok in ["pump-x1", "a", "0", &"a".repeat(64)] {
            assert!(ProductName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Pump", "pump_x1", "pump/x1", &"a".repeat(65), "targets", "root", "pump x"] {
            assert!(ProductName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_names() {
        for ok in ["fw.bin", "FW-1_2.img", &"a".repeat(128)] {
            assert!(FileName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é.bin", &"a".repeat(129)] {
            assert!(FileName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert!(FirmwareVersion::parse("1.4.2").is_ok());
        assert!(FirmwareVersion::parse("2.0.0-rc.1").is_ok());
        for bad in ["1.4", "v1.4.2", "", "1.4.2.1", "1.3.0+build.1", " 1.0.0"] {
            assert!(FirmwareVersion::parse(bad).is_err(), "{bad}");
        }
        assert!(FirmwareVersion::parse("1.10.0").unwrap() > FirmwareVersion::parse("1.9.0").unwrap());
    }

    #[test]
    fn target_names_match_their_delegation_segmentwise() {
        let p = ProductName::parse("pump-x1").unwrap();
        let name = target_name(&p, &FirmwareVersion::parse("1.0.0").unwrap(), &FileName::parse("fw.bin").unwrap());
        assert_eq!(name, "pump-x1/1.0.0/fw.bin");
        let pattern = delegation_pattern(&p);
        assert_eq!(pattern.split('/').count(), name.split('/').count());
    }
}
