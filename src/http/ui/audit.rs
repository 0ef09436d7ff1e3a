//! The audit log in the admin UI: `GET /ui/audit` (filters, newest first, paged by id; each
//! entry's changed fields and a link to its object, `diff`) and `GET /ui/audit.csv` (every
//! matching entry up to [`EXPORT_CAP`], streamed page by page, whole).
//! Reads go through `services::audit`, the same query the API uses.

use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION};
use actix_web::{HttpResponse, web};
use askama::Template;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde::Deserialize;

mod diff;

use self::diff::{Change, changes, object_link};
use super::pages::{FieldErrors, Layout, ago, when};
use super::session::{UiError, UiUser, html};
use crate::db::entities::audit;
use crate::http::resource;
use crate::services::audit::{AuditPeriod, AuditQuery, MAX_PAGE, list_audit_in};
use crate::services::{ServiceError, Services};

/// Entries per page on screen.
const PAGE: u64 = 100;
/// The most entries one export holds: years of a busy fleet's admin actions, a few tens of
/// megabytes at most; beyond it, narrow the dates.
pub const EXPORT_CAP: u64 = 100_000;
const CSV_HEADER: [&str; 6] = ["at", "actor", "action", "object", "before", "after"];

/// The filters as typed (`?actor=&action=&object=&from=&to=&before=`).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filters {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    object: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    before: String,
}

/// One entry as shown.
#[derive(Debug)]
struct Row {
    when: String,
    actor: String,
    action: String,
    object: String,
    /// The object's page, if it has one.
    link: Option<String>,
    changes: Vec<Change>,
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct AuditPage {
    layout: Layout,
    filters: Filters,
    errors: FieldErrors,
    rows: Vec<Row>,
    next_page: Option<String>,
    export: String,
    cap: String,
}

impl AuditPage {
    /// The newest entries with the same filters.
    fn first_page(&self) -> String {
        self.filters.link("/ui/audit", None)
    }
}

/// A filter's date: `YYYY-MM-DD` (a whole day) or `YYYY-MM-DDTHH:MM[:SS]` (as a
/// `datetime-local` field sends it), in UTC. Returns the first second and the first second
/// after it, so `to` takes in the whole day or minute it names.
fn parse_moment(raw: &str) -> Option<(i64, i64)> {
    let utc = |dt: DateTime| dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp().as_second());
    if raw.len() == 10 {
        let start = raw.parse::<Date>().ok()?.to_datetime(jiff::civil::Time::midnight());
        return Some((utc(start)?, utc(start)? + 86_400));
    }
    let dt = raw.replacen(' ', "T", 1).parse::<DateTime>().ok()?;
    let step = if raw.len() <= 16 { 60 } else { 1 };
    Some((utc(dt)?, utc(dt)? + step))
}

impl Filters {
    fn trimmed(self) -> Self {
        let t = |s: String| s.trim().to_owned();
        Self {
            actor: t(self.actor),
            action: t(self.action),
            object: t(self.object),
            from: t(self.from),
            to: t(self.to),
            before: t(self.before),
        }
    }

    /// The service's query and period, or the field errors.
    fn parse(&self) -> Result<(AuditQuery, AuditPeriod), FieldErrors> {
        let mut errors = FieldErrors::default();
        let hint = "Use YYYY-MM-DD, or YYYY-MM-DDTHH:MM for a time (UTC).";
        let mut moment = |field: &'static str, raw: &str| match raw {
            "" => None,
            raw => parse_moment(raw).or_else(|| {
                errors.add(field, hint);
                None
            }),
        };
        let (from, to) = (moment("from", &self.from), moment("to", &self.to));
        let before = match self.before.as_str() {
            "" => None,
            raw => raw.parse::<i64>().ok().filter(|b| *b > 0).or_else(|| {
                errors.add("before", "The page link is malformed: start again from the first page.");
                None
            }),
        };
        if let (Some((from, _)), Some((_, until))) = (from, to)
            && until <= from
        {
            errors.add("to", "The end is before the start.");
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let given = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let query = AuditQuery {
            limit: None,
            before,
            actor: given(&self.actor),
            action: given(&self.action),
            object: given(&self.object),
        };
        Ok((query, AuditPeriod { from: from.map(|f| f.0), until: to.map(|t| t.1) }))
    }

    /// `path?filters`, with `before` if given.
    fn link(&self, path: &str, before: Option<i64>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let fields = [
            ("actor", &self.actor),
            ("action", &self.action),
            ("object", &self.object),
            ("from", &self.from),
            ("to", &self.to),
        ];
        for (name, value) in fields.into_iter().filter(|(_, v)| !v.is_empty()) {
            query.append_pair(name, value);
        }
        if let Some(before) = before {
            query.append_pair("before", &before.to_string());
        }
        format!("{path}?{}", query.finish())
    }
}

impl Row {
    /// The row of entry `e`, its time also counted back from `now`.
    fn of(e: audit::Model, now: i64) -> Self {
        Self {
            when: format!("{} ({})", when(e.at), ago(e.at, now)),
            actor: e.actor,
            action: e.action,
            link: object_link(&e.object),
            object: e.object,
            changes: changes(e.before.as_deref(), e.after.as_deref()),
        }
    }
}

fn page(user: &UiUser, filters: Filters, errors: FieldErrors) -> AuditPage {
    AuditPage {
        layout: Layout::of(user, "audit"),
        export: filters.link("/ui/audit.csv", None),
        filters,
        errors,
        rows: Vec::new(),
        next_page: None,
        // Thousands grouped as people read them: "100 000".
        cap: format!("{} {:03}", EXPORT_CAP / 1_000, EXPORT_CAP % 1_000),
    }
}

/// GET /ui/audit
pub async fn list(user: UiUser, svc: web::Data<Services>, q: web::Query<Filters>) -> Result<HttpResponse, UiError> {
    let filters = q.into_inner().trimmed();
    let (query, period) = match filters.parse() {
        Ok(parsed) => parsed,
        Err(errors) => return Ok(html(StatusCode::BAD_REQUEST, page(&user, filters, errors).render()?)),
    };
    // One more than shown says whether there is a next page.
    let mut entries = list_audit_in(&svc, AuditQuery { limit: Some(PAGE + 1), ..query }, period).await?;
    let more = entries.len() as u64 > PAGE;
    entries.truncate(usize::try_from(PAGE).unwrap_or(usize::MAX));
    let mut out = page(&user, filters, FieldErrors::default());
    out.next_page = entries.last().filter(|_| more).map(|last| out.filters.link("/ui/audit", Some(last.id)));
    let now = svc.now_secs();
    out.rows = entries.into_iter().map(|e| Row::of(e, now)).collect();
    Ok(html(StatusCode::OK, out.render()?))
}

/// GET /ui/audit.csv
pub async fn export(user: UiUser, svc: web::Data<Services>, q: web::Query<Filters>) -> Result<HttpResponse, UiError> {
    let filters = q.into_inner().trimmed();
    let (query, period) = match filters.parse() {
        Ok(parsed) => parsed,
        Err(errors) => return Ok(html(StatusCode::BAD_REQUEST, page(&user, filters, errors).render()?)),
    };
    let body = csv_body(svc.into_inner(), query, period)
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "audit export cut short"));
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((CONTENT_DISPOSITION, "attachment; filename=\"patchgate-audit.csv\""))
        .insert_header((CACHE_CONTROL, "no-store"))
        .streaming(body))
}

/// The header row, then one chunk per page of up to [`MAX_PAGE`] entries, newest first, until
/// the log or [`EXPORT_CAP`] runs out. Each page is its own query, so memory stays bounded.
fn csv_body(
    svc: std::sync::Arc<Services>,
    query: AuditQuery,
    period: AuditPeriod,
) -> impl Stream<Item = Result<Bytes, ServiceError>> {
    let header = csv_chunk([CSV_HEADER.map(str::to_owned)]);
    let start = (query.before, 0_u64, false);
    let pages = stream::try_unfold(start, move |(before, sent, finished)| {
        let (svc, query) = (svc.clone(), query.clone());
        async move {
            if finished || sent >= EXPORT_CAP {
                return Ok(None);
            }
            let limit = (EXPORT_CAP - sent).min(MAX_PAGE);
            let entries = list_audit_in(&svc, AuditQuery { limit: Some(limit), before, ..query }, period).await?;
            let n = entries.len() as u64;
            let last = entries.last().map(|e| e.id);
            let chunk = csv_chunk(entries.into_iter().map(csv_record))?;
            Ok(Some((chunk, (last, sent + n, n < limit))))
        }
    });
    stream::once(async move { header }).chain(pages)
}

fn csv_record(e: audit::Model) -> [String; 6] {
    let at = jiff::Timestamp::from_second(e.at).map(|t| t.to_string()).unwrap_or_default();
    [at, e.actor, e.action, e.object, e.before.unwrap_or_default(), e.after.unwrap_or_default()]
}

/// A spreadsheet runs a cell starting with one of these as a formula; audit entries quote what
/// people and devices typed, so such cells get a leading `'` (OWASP's CSV-injection advice).
fn neutralised(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}") } else { cell }
}

fn csv_chunk(records: impl IntoIterator<Item = [String; 6]>) -> Result<Bytes, ServiceError> {
    let internal = |e: csv::Error| ServiceError::Internal(anyhow::Error::new(e));
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    for record in records {
        writer.write_record(record.map(neutralised)).map_err(internal)?;
    }
    writer.into_inner().map(Bytes::from).map_err(|e| internal(e.into_error().into()))
}

/// Registers this module's routes under `/ui`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/audit", [(Method::GET, web::to(list))]))
        .service(resource("/audit.csv", [(Method::GET, web::to(export))]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_take_in_what_they_name() {
        assert_eq!(parse_moment("2026-11-24"), Some((1_795_478_400, 1_795_478_400 + 86_400)));
        assert_eq!(parse_moment("2026-11-24T10:30"), Some((1_795_516_200, 1_795_516_260)));
        assert_eq!(parse_moment("2026-11-24 10:30:05"), Some((1_795_516_205, 1_795_516_206)));
        for bad in ["yesterday", "2026-13-01", "24/11/2026", "2026-11-24T25:00"] {
            assert_eq!(parse_moment(bad), None, "{bad}");
        }
    }

    #[test]
    fn formulas_are_defused() {
        assert_eq!(neutralised("=HYPERLINK(1)".into()), "'=HYPERLINK(1)");
        assert_eq!(neutralised("user:alice".into()), "user:alice");
    }
}
