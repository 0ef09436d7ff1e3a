//! What every admin UI page shares: the [`Layout`] (who is signed in, what the role may do, the
//! CSRF token for forms), form field errors, the error page, and time formatting.

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;

use super::session::{UiUser, html};
use crate::services::auth::Permission;

/// The frame around every page.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The signed-in user's name.
    pub user: String,
    /// Their role.
    pub role: String,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    /// May publish releases.
    pub can_publish: bool,
    /// May steer rollouts, cohorts and enrollment tokens.
    pub can_manage: bool,
    /// May do everything (decommission devices…).
    pub can_admin: bool,
    /// The server signs with the public development keys: a banner on every page says so.
    pub dev_keys: bool,
}

impl Layout {
    /// The layout for `user` on the page `nav`.
    pub fn of(user: &UiUser, nav: &'static str) -> Self {
        let role = user.0.role;
        Self {
            user: user.0.user.name.clone(),
            role: role.to_string(),
            csrf: user.0.session.csrf_token.clone(),
            nav,
            can_publish: role.allows(Permission::Publish),
            can_manage: role.allows(Permission::ManageRollouts),
            can_admin: role.allows(Permission::Admin),
            dev_keys: user.1,
        }
    }
}

/// A form that carries only the session's CSRF token: sign-out and the confirmations that
/// need no other field.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    /// The token.
    #[serde(default)]
    pub csrf: String,
}

/// `?notice=<code>` on a page that is the target of a post/redirect/get.
#[derive(Debug, Default, serde::Deserialize)]
pub struct NoticeQuery {
    /// The code.
    #[serde(default)]
    pub notice: String,
}

impl NoticeQuery {
    /// The sentence `table` gives this code; unknown codes show nothing (never echo the query).
    pub fn text(&self, table: &[(&str, &'static str)]) -> Option<&'static str> {
        table.iter().find(|(code, _)| *code == self.notice).map(|(_, text)| *text)
    }
}

/// Messages next to form fields, by field name.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors(pub BTreeMap<&'static str, String>);

impl FieldErrors {
    /// Records `message` for `field` (the first one wins).
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| message.into());
    }

    /// The message for `field`, if any.
    pub fn get(&self, field: &str) -> Option<&String> {
        self.0.get(field)
    }

    /// Whether any field has a message.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// A standalone error page (no session needed).
pub fn error_page(status: StatusCode, message: &str) -> HttpResponse {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = ErrorPage { status: status.as_u16(), title, message }
        .render()
        .unwrap_or_else(|_| format!("<!doctype html><title>{}</title><p>{}</p>", status.as_u16(), title));
    html(status, body)
}

/// `YYYY-MM-DD HH:MM UTC` for Unix seconds.
pub fn when(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

/// How long ago `secs` was at `now`, as people say it: "just now", "12 min ago", "5 h ago",
/// "3 days ago" (a time in the future, from a clock that ran ahead: "just now").
pub fn ago(secs: i64, now: i64) -> String {
    match now.saturating_sub(secs) {
        d if d < 60 => "just now".to_owned(),
        d if d < 3_600 => format!("{} min ago", d / 60),
        d if d < 2 * 86_400 => format!("{} h ago", d / 3_600),
        d => format!("{} days ago", d / 86_400),
    }
}

/// "3 days", "5 h", "12 min", for a duration in seconds (negative: "expired").
pub fn countdown(secs: i64) -> String {
    match secs {
        s if s < 0 => "expired".to_owned(),
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 3_600 => format!("{} h", s / 3_600),
        s => format!("{} min", s / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdowns_read_naturally() {
        assert_eq!(countdown(-5), "expired");
        assert_eq!(countdown(90 * 86_400), "90 days");
        assert_eq!(countdown(5 * 3_600 + 10), "5 h");
        assert_eq!(countdown(12 * 60), "12 min");
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
    }

    #[test]
    fn ages_read_naturally() {
        let now = 1_000_000;
        assert_eq!(ago(now - 59, now), "just now");
        assert_eq!(ago(now + 30, now), "just now", "a clock that ran ahead");
        assert_eq!(ago(now - 60, now), "1 min ago");
        assert_eq!(ago(now - 3_599, now), "59 min ago");
        assert_eq!(ago(now - 3_600, now), "1 h ago");
        assert_eq!(ago(now - 47 * 3_600, now), "47 h ago");
        assert_eq!(ago(now - 3 * 86_400 - 5, now), "3 days ago");
    }
}
