//! `GET /api/v1/products/{product}/installed`: which device runs which version, for recalls and
//! field notices. JSON by default; CSV with `?format=csv` or `Accept: text/csv`.
//!
//! The answer is streamed as the service reads the fleet page by page, so memory stays flat
//! however many devices there are. A database failure mid-way cuts the connection (the status
//! line has already gone out): the client sees a truncated body, never a silently short list.

use actix_web::http::header::{ACCEPT, CONTENT_DISPOSITION};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::entities::device;
use crate::domain::names::ProductName;
use crate::http::auth::ViewerAuth;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::query::ApiQuery;
use crate::services::devices::installed_devices;
use crate::services::{ServiceError, Services};

/// Query parameters.
#[derive(Debug, Deserialize, IntoParams)]
// In the query string: utoipa infers it from `web::Query`, not from our `ApiQuery`.
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstalledQuery {
    /// `json` (default) or `csv`; without it, `Accept: text/csv` asks for CSV.
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

/// One device and what it runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstalledRowDto {
    /// The manufacturer's id.
    pub device_id: String,
    /// Hardware id.
    pub hardware_id: String,
    /// `active` or `decommissioned`.
    pub status: String,
    /// Version it last reported running.
    pub installed_version: Option<String>,
    /// Target name it last reported running.
    pub installed_name: Option<String>,
    /// SHA-256 of that image.
    pub installed_sha256: Option<String>,
    /// Unix seconds of its last report (in CSV: RFC 3339).
    pub last_seen_at: Option<i64>,
    /// Admin-set tags (in CSV: separated by spaces).
    pub tags: Vec<String>,
}

impl From<device::Model> for InstalledRowDto {
    fn from(d: device::Model) -> Self {
        Self {
            tags: serde_json::from_str(&d.tags).unwrap_or_default(),
            device_id: d.device_id,
            hardware_id: d.hardware_id,
            status: d.status,
            installed_version: d.installed_version,
            installed_name: d.installed_name,
            installed_sha256: d.installed_sha256,
            last_seen_at: d.last_seen_at,
        }
    }
}

const CSV_HEADER: [&str; 8] = [
    "device_id",
    "hardware_id",
    "status",
    "installed_version",
    "installed_name",
    "installed_sha256",
    "last_seen_at",
    "tags",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn wanted_format(req: &HttpRequest, format: Option<&str>) -> Result<Format, ApiError> {
    match format {
        Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => {
            Err(ApiError::bad_request("invalid_format", format!("format must be json or csv, not {other:?}")))
        }
        None => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
            Ok(if accept.contains("text/csv") { Format::Csv } else { Format::Json })
        }
    }
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ServiceError {
    ServiceError::Internal(anyhow::Error::new(e))
}

/// The body as actix streams it. Once the status line is out an error can only cut the
/// connection, so it is logged here, where its cause is known.
fn logged(body: impl Stream<Item = Result<Bytes, ServiceError>>) -> impl Stream<Item = Result<Bytes, ServiceError>> {
    body.inspect_err(|e| tracing::error!(error = format!("{e:#}"), "installed-version export cut short"))
}

/// `[`, the rows separated by commas, `]`.
fn json_body(
    pages: impl Stream<Item = Result<Vec<device::Model>, ServiceError>>,
) -> impl Stream<Item = Result<Bytes, ServiceError>> {
    let mut first = true;
    let rows = pages.map(move |page| {
        let mut buf = Vec::new();
        for d in page? {
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
            serde_json::to_writer(&mut buf, &InstalledRowDto::from(d)).map_err(internal)?;
        }
        Ok(Bytes::from(buf))
    });
    stream::once(async { Ok(Bytes::from_static(b"[")) })
        .chain(rows)
        .chain(stream::once(async { Ok(Bytes::from_static(b"]")) }))
}

/// A spreadsheet would run a cell starting with one of these as a formula, and image names and
/// versions come from devices: such cells get a leading `'` (OWASP's CSV-injection advice).
fn neutralised(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}") } else { cell }
}

fn csv_chunk(records: impl IntoIterator<Item = [String; 8]>) -> Result<Bytes, ServiceError> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    for record in records {
        writer.write_record(record.map(neutralised)).map_err(internal)?;
    }
    writer.into_inner().map(Bytes::from).map_err(|e| internal(e.into_error()))
}

fn csv_record(d: device::Model) -> [String; 8] {
    let row = InstalledRowDto::from(d);
    let seen = row.last_seen_at.and_then(|s| jiff::Timestamp::from_second(s).ok()).map(|t| t.to_string());
    [
        row.device_id,
        row.hardware_id,
        row.status,
        row.installed_version.unwrap_or_default(),
        row.installed_name.unwrap_or_default(),
        row.installed_sha256.unwrap_or_default(),
        seen.unwrap_or_default(),
        row.tags.join(" "),
    ]
}

/// The header row, then one chunk of rows per page.
fn csv_body(
    pages: impl Stream<Item = Result<Vec<device::Model>, ServiceError>>,
) -> impl Stream<Item = Result<Bytes, ServiceError>> {
    let header = CSV_HEADER.map(str::to_owned);
    stream::once(async move { csv_chunk([header]) })
        .chain(pages.map(|page| csv_chunk(page?.into_iter().map(csv_record))))
}

/// Every device of a product with what it runs (JSON array, or CSV with a header row).
#[utoipa::path(get, path = "/api/v1/products/{product}/installed", tag = "devices",
    params(("product" = ProductName, Path), InstalledQuery),
    responses((status = 200, description = "JSON, or CSV with a header row",
            content((Vec<InstalledRowDto> = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    svc: web::Data<Services>,
    _auth: ViewerAuth,
    req: HttpRequest,
    product: web::Path<String>,
    q: ApiQuery<InstalledQuery>,
) -> Result<HttpResponse, ApiError> {
    let format = wanted_format(&req, q.format.as_deref())?;
    let pages = installed_devices(&svc, &product).await?;
    Ok(match format {
        Format::Json => HttpResponse::Ok().content_type("application/json").streaming(logged(json_body(pages))),
        Format::Csv => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            // Product names are `[a-z0-9-]`, so the file name needs no quoting rules.
            .insert_header((CONTENT_DISPOSITION, format!("attachment; filename=\"{product}-installed.csv\"")))
            .streaming(logged(csv_body(pages))),
    })
}
