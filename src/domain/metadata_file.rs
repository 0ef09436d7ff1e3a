//! The names under which a repository serves its metadata: `timestamp.json` and
//! `{version}.{role}.json`. One parser for the image repository, the director's roots and
//! each device's director files, so no route answers a second spelling of the same file.

/// A metadata file name, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataFile<'a> {
    /// `timestamp.json`: the newest timestamp.
    Timestamp,
    /// `{version}.{role}.json`: exactly that version of that role.
    Versioned {
        /// 1 or more.
        version: i64,
        /// Any role but the timestamp.
        role: &'a str,
    },
}

impl<'a> MetadataFile<'a> {
    /// Parses `file`; `None` unless it is spelled exactly as the repository writes it.
    ///
    /// A version is decimal digits without a sign or leading zero: `01.root.json` or
    /// `+1.root.json` would otherwise be second, immutably cacheable names for `1.root.json`.
    /// The timestamp is only ever served unversioned (TUF 5.4), so `1.timestamp.json` is none.
    pub fn parse(file: &'a str) -> Option<Self> {
        if file == "timestamp.json" {
            return Some(Self::Timestamp);
        }
        let (version, role) = file.strip_suffix(".json")?.split_once('.')?;
        let canonical = !version.is_empty()
            && version.len() <= 18
            && version.bytes().all(|b| b.is_ascii_digit())
            && !version.starts_with('0');
        if !canonical || role.is_empty() || role == "timestamp" {
            return None;
        }
        Some(Self::Versioned { version: version.parse().ok()?, role })
    }
}

#[cfg(test)]
mod tests {
    use super::MetadataFile::{self, Timestamp, Versioned};

    #[test]
    fn canonical_spellings_parse() {
        assert_eq!(MetadataFile::parse("timestamp.json"), Some(Timestamp));
        assert_eq!(MetadataFile::parse("1.root.json"), Some(Versioned { version: 1, role: "root" }));
        assert_eq!(MetadataFile::parse("10.targets.json"), Some(Versioned { version: 10, role: "targets" }));
        assert_eq!(MetadataFile::parse("3.pump-x1.json"), Some(Versioned { version: 3, role: "pump-x1" }));
        let max = "999999999999999999.snapshot.json";
        assert_eq!(MetadataFile::parse(max), Some(Versioned { version: 999_999_999_999_999_999, role: "snapshot" }));
    }

    #[test]
    fn every_other_spelling_is_none() {
        for file in [
            "01.root.json",
            "+1.root.json",
            "-1.root.json",
            "001.targets.json",
            "0.root.json",
            " 1.root.json",
            "1 .root.json",
            "1.root.JSON",
            "1.root",
            ".root.json",
            "1..json",
            "1.timestamp.json",
            "timestamp",
            "Timestamp.json",
            "1e3.root.json",
            "0x1.root.json",
            "١.root.json",
            "9999999999999999999.root.json",
            "",
        ] {
            assert_eq!(MetadataFile::parse(file), None, "{file:?}");
        }
    }
}
