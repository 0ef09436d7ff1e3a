//! How an audit entry reads on screen: what changed (before → after, field by field, leaving
//! out what stayed the same) and where its object lives in the console.

use super::super::session::urlencode;

/// One field that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The field's name (empty for a value that is not an object).
    pub field: String,
    /// Its value before, if it had one.
    pub before: Option<String>,
    /// Its value after, if it has one.
    pub after: Option<String>,
}

/// A value as a person reads it: a string without its quotes, anything else as compact JSON.
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The fields that differ between `before` and `after` (the JSON texts the audit log keeps), by
/// name, then those only `before` had. An entry that only creates or
/// only removes lists every field it has. Text that is not a JSON object is one change as is.
pub fn changes(before: Option<&str>, after: Option<&str>) -> Vec<Change> {
    let parse = |raw: Option<&str>| raw.map(|r| serde_json::from_str::<serde_json::Value>(r).map_err(|_| r.to_owned()));
    let object = |v: &Option<Result<serde_json::Value, String>>| match v {
        None => Some(serde_json::Map::new()),
        Some(Ok(serde_json::Value::Object(map))) => Some(map.clone()),
        Some(_) => None,
    };
    let (b, a) = (parse(before), parse(after));
    let (Some(old), Some(new)) = (object(&b), object(&a)) else {
        let whole = |v: Option<Result<serde_json::Value, String>>| v.map(|v| v.map_or_else(|raw| raw, |v| text(&v)));
        return vec![Change { field: String::new(), before: whole(b), after: whole(a) }];
    };
    let mut out = Vec::new();
    for (field, value) in &new {
        if old.get(field) != Some(value) {
            out.push(Change { field: field.clone(), before: old.get(field).map(text), after: Some(text(value)) });
        }
    }
    for (field, value) in old.iter().filter(|(f, _)| !new.contains_key(*f)) {
        out.push(Change { field: field.clone(), before: Some(text(value)), after: None });
    }
    out
}

/// The console page of an audit entry's object (`rollout:r-1`, `device:pump-7`,
/// `release:pump-x1/1.4.2/fw.bin`…), if it has one.
pub fn object_link(object: &str) -> Option<String> {
    let (kind, id) = object.split_once(':')?;
    let parts: Vec<String> = id.split('/').map(urlencode).collect();
    match (kind, parts.as_slice()) {
        ("rollout", [id]) => Some(format!("/ui/rollouts/{id}")),
        ("device", [id]) => Some(format!("/ui/devices/{id}")),
        ("product", [name]) => Some(format!("/ui/products/{name}")),
        ("release", [product, version, _file]) => Some(format!("/ui/products/{product}/releases/{version}")),
        ("cohort", [product, name]) => Some(format!("/ui/cohorts/{product}/{name}")),
        ("enrollment_token", [_]) => Some("/ui/enrollment-tokens".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change { field: field.into(), before: before.map(Into::into), after: after.map(Into::into) }
    }

    #[test]
    fn only_the_fields_that_changed_are_listed() {
        let before = r#"{"state":"running","current_stage":1,"reason":null}"#;
        let after = r#"{"state":"paused","current_stage":1,"reason":null,"note":"ward 3 asked"}"#;
        assert_eq!(
            changes(Some(before), Some(after)),
            [change("note", None, Some("ward 3 asked")), change("state", Some("running"), Some("paused"))]
        );
        // Removed fields come last; values that are not strings keep their JSON.
        assert_eq!(
            changes(Some(r#"{"tags":["a"],"gone":true}"#), Some(r#"{"tags":["a","b"]}"#)),
            [change("tags", Some(r#"["a"]"#), Some(r#"["a","b"]"#)), change("gone", Some("true"), None)]
        );
        assert_eq!(changes(Some(r#"{"a":1}"#), Some(r#"{"a":1}"#)), [], "nothing changed");
    }

    #[test]
    fn a_creation_lists_every_field_and_odd_text_is_shown_whole() {
        assert_eq!(
            changes(None, Some(r#"{"id":"r-1","stages":2}"#)),
            [change("id", None, Some("r-1")), change("stages", None, Some("2"))]
        );
        assert_eq!(changes(None, None), []);
        assert_eq!(changes(Some("not json"), Some("[1]")), [change("", Some("not json"), Some("[1]"))]);
    }

    #[test]
    fn objects_link_to_their_pages() {
        assert_eq!(object_link("rollout:r-2026-11").as_deref(), Some("/ui/rollouts/r-2026-11"));
        assert_eq!(object_link("device:pump-0001").as_deref(), Some("/ui/devices/pump-0001"));
        assert_eq!(object_link("release:pump-x1/1.4.2/fw.bin").as_deref(), Some("/ui/products/pump-x1/releases/1.4.2"));
        assert_eq!(object_link("cohort:pump-x1/eu").as_deref(), Some("/ui/cohorts/pump-x1/eu"));
        assert_eq!(object_link("product:pump-x1").as_deref(), Some("/ui/products/pump-x1"));
        assert_eq!(object_link("enrollment_token:7").as_deref(), Some("/ui/enrollment-tokens"));
        for none in ["user:alice", "token:t-1", "rollout:a/b", "no-colon"] {
            assert_eq!(object_link(none), None, "{none}");
        }
    }
}
