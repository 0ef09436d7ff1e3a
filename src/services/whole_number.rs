//! Whole numbers as JSON may write them: `1080` or `1080.0`. JSON, and JSON Schema's `integer`,
//! do not tell the two apart; serde does, so the counts and durations of request bodies are read
//! with these (`#[serde(deserialize_with = "whole_number::exact")]`).

use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// The whole number `n` stands for, if it is one that fits an `i128`.
fn whole(n: &Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    // From 2^53 on a float no longer tells neighbouring integers apart: refuse rather than
    // round. (A literal with more digits than a float keeps, such as 1.0000000000000001, reads
    // as its nearest float; the fields using this are counts far below that precision.)
    let f = n.as_f64()?;
    #[expect(clippy::cast_possible_truncation, reason = "checked whole and below 2^53 first")]
    (f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0).then_some(f as i128)
}

fn convert<T: TryFrom<i128>, E: serde::de::Error>(n: &Number) -> Result<T, E> {
    whole(n).and_then(|v| T::try_from(v).ok()).ok_or_else(|| E::custom(format!("{n} is not a whole number in range")))
}

/// A required whole number.
pub fn exact<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    convert(&Number::deserialize(d)?)
}

/// An optional whole number (`null` or left out: `None`, with `#[serde(default)]`).
pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Number>::deserialize(d)?.map(|n| convert(&n)).transpose()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Counts {
        #[serde(deserialize_with = "super::exact")]
        minutes: i64,
        #[serde(default, deserialize_with = "super::optional")]
        uses: Option<u32>,
    }

    fn read(json: &str) -> Result<(i64, Option<u32>), String> {
        serde_json::from_str::<Counts>(json).map(|c| (c.minutes, c.uses)).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_either_spelling() {
        assert_eq!(read(r#"{"minutes": 1080}"#), Ok((1080, None)));
        assert_eq!(read(r#"{"minutes": 1080.0, "uses": 2e1}"#), Ok((1080, Some(20))));
        assert_eq!(read(r#"{"minutes": -5, "uses": null}"#), Ok((-5, None)));
        for bad in
            [r#"{"minutes": 1.5}"#, r#"{"minutes": 1, "uses": -1}"#, r#"{"minutes": "1"}"#, r#"{"minutes": 1e300}"#]
        {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
