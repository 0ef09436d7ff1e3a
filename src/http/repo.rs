//! Public TUF repository routes: image metadata and targets, director roots.
//!
//! Only committed versions exist (the bytes come from the database). Versioned paths are
//! immutable and cached for a year; `timestamp.json` for a few seconds; 404s never.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::TryStreamExt;

use super::error::ApiError;
use super::sendfile::{FileBody, ZeroCopy};
use crate::domain::metadata_file::MetadataFile;
use crate::services::Services;
use crate::services::serve::{self, ResolvedTarget};
use crate::storage::Blob;

/// `timestamp.json` changes with every publish: clients and proxies may reuse it this long.
const TIMESTAMP_MAX_AGE: &str = "public, max-age=10";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `GET|HEAD /repo/metadata/{file}`.
#[utoipa::path(get, path = "/repo/metadata/{file}", tag = "repository",
    params(("file" = String, Path, description = "timestamp.json, or {N}.root.json, {N}.snapshot.json, {N}.targets.json, {N}.{product}.json")),
    responses((status = 200, description = "Signed TUF metadata"), (status = 404, body = super::error::ErrorBody)))]
pub async fn image_metadata(
    svc: web::Data<Services>,
    req: HttpRequest,
    file: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let found = serve::find_metadata(&svc, serve::IMAGE, &file).await?;
    metadata_response(&svc, &req, &file, found)
}

/// `GET|HEAD /director/metadata/{N}.root.json`.
#[utoipa::path(get, path = "/director/metadata/{file}", tag = "repository",
    params(("file" = String, Path, description = "{N}.root.json", pattern = "^[1-9][0-9]{0,17}[.]root[.]json$")),
    responses((status = 200, description = "Director root"), (status = 404, body = super::error::ErrorBody)))]
pub async fn director_root(
    svc: web::Data<Services>,
    req: HttpRequest,
    file: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let found = match MetadataFile::parse(&file) {
        Some(MetadataFile::Versioned { role: "root", .. }) => {
            serve::find_metadata(&svc, serve::DIRECTOR, &file).await?
        }
        _ => None,
    };
    metadata_response(&svc, &req, &file, found)
}

/// A public metadata file: gzip-encoded when the client accepts gzip and the file is large
/// enough to gain from it (the client still checks length and hashes on the decoded bytes, so
/// the encoding costs no trust), with an ETag of its own per encoding.
fn metadata_response(
    svc: &Services,
    req: &HttpRequest,
    file: &str,
    found: Option<(bytes::Bytes, String)>,
) -> Result<HttpResponse, ApiError> {
    let Some((body, sha256)) = found else {
        return Ok(super::error::json_error(StatusCode::NOT_FOUND, "not_found", &format!("no metadata {file}")));
    };
    let cache = if file == "timestamp.json" { TIMESTAMP_MAX_AGE } else { IMMUTABLE };
    if body.len() < serve::GZIP_MIN_BYTES {
        return Ok(signed_json_response(req, body, &sha256, cache));
    }
    if !accepts_gzip(req) {
        let mut res = signed_json_response(req, body, &sha256, cache);
        res.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        return Ok(res);
    }
    let etag = format!("{sha256}-gzip");
    let mut res = match not_modified(req, &etag, cache) {
        Some(not_modified) => not_modified,
        None => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .insert_header((header::ETAG, format!("\"{etag}\"")))
            .insert_header((header::CACHE_CONTROL, cache))
            .body(serve::gzipped_metadata(svc, &sha256, &body)?),
    };
    res.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    Ok(res)
}

/// Whether `Accept-Encoding` accepts gzip: named with a non-zero weight, or not named and `*`
/// accepted.
fn accepts_gzip(req: &HttpRequest) -> bool {
    let mut star = false;
    for item in
        req.headers().get_all(header::ACCEPT_ENCODING).filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let accepted = !parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0)));
        if coding.eq_ignore_ascii_case("gzip") {
            return accepted;
        }
        star |= coding == "*" && accepted;
    }
    star
}

/// Signed metadata bytes with their ETag (the SHA-256), answering 304 to a matching
/// `If-None-Match`, with `cache` as `Cache-Control`.
pub(super) fn signed_json_response(
    req: &HttpRequest,
    body: bytes::Bytes,
    sha256: &str,
    cache: &'static str,
) -> HttpResponse {
    if let Some(not_modified) = not_modified(req, sha256, cache) {
        return not_modified;
    }
    let etag = format!("\"{sha256}\"");
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache))
        .body(body)
}

/// 304 when the request's `If-None-Match` names the file whose SHA-256 is `sha256`.
pub(super) fn not_modified(req: &HttpRequest, sha256: &str, cache: &'static str) -> Option<HttpResponse> {
    let etag = format!("\"{sha256}\"");
    if_none_match(req, &etag).then(|| {
        HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, cache))
            .finish()
    })
}

/// A device token the agent sends with its downloads (`Authorization: Bearer pgd_…`): the
/// repository is public, so the token only says whose rollout the bytes count toward.
fn device_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    // DDI clients (SWUpdate) send their token as hawkBit's `TargetToken`.
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("TargetToken "))
        .map(str::trim)
        .filter(|t| t.starts_with(crate::services::enrollment::DEVICE_TOKEN_PREFIX))
}

fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// `GET|HEAD /repo/targets/{path}`: both consistent-snapshot spellings
/// (`{product}/{version}/{hash}.{file}` and `{hash}.{product}/{version}/{file}`).
#[utoipa::path(get, path = "/repo/targets/{path}", tag = "repository",
    params(("path" = String, Path, description = "A target name with its hash prefixed to the file name or to the whole path")),
    responses((status = 200, description = "The firmware file"), (status = 206, description = "A byte range"),
        (status = 307, description = "With `presigned_download_seconds` set: the file at a presigned URL of the S3 store"),
        (status = 404, body = super::error::ErrorBody), (status = 416, description = "Range not satisfiable")))]
pub async fn target(
    svc: web::Data<Services>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some(target) = serve::resolve_target(&svc, &path).await? else {
        return Ok(super::error::json_error(StatusCode::NOT_FOUND, "not_found", &format!("no target {path}")));
    };
    let etag = format!("\"{}\"", target.sha256);
    if if_none_match(&req, &etag) {
        return Ok(HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish());
    }
    let range = match req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(raw) => match parse_range(raw, target.length) {
            RangeRequest::Ignore => None,
            RangeRequest::Satisfiable(r) => Some(r),
            RangeRequest::Unsatisfiable => {
                return Ok(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                    .insert_header((header::CONTENT_RANGE, format!("bytes */{}", target.length)))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .json(super::error::ErrorBody {
                        error: "range_not_satisfiable".into(),
                        message: format!("the target has {} bytes", target.length),
                        last_counter: None,
                    }));
            }
        },
    };
    if req.method() == actix_web::http::Method::GET
        && let Some(token) = device_token(&req)
    {
        // Before the first byte (a download is rare and large; the figure is then in place by
        // the time the device has its file), whether the server or the object store sends it.
        let length = range.as_ref().map_or(target.length, |r| r.end - r.start);
        serve::attribute_download(&svc, token, &target, length).await;
    }
    if svc.config.presigned_download_seconds > 0 && req.method() == actix_web::http::Method::GET {
        let valid_for = std::time::Duration::from_secs(svc.config.presigned_download_seconds);
        if let Some(url) =
            svc.store.presigned_get(&target.sha256, valid_for).await.map_err(crate::services::ServiceError::from)?
        {
            // The client sends its Range again to the store; the URL expires, so nothing caches it.
            return Ok(HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, url.as_str()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish());
        }
    }
    stream_target(&svc, &req, target, etag, range).await
}

async fn stream_target(
    svc: &Services,
    req: &HttpRequest,
    target: ResolvedTarget,
    etag: String,
    range: Option<std::ops::Range<u64>>,
) -> Result<HttpResponse, ApiError> {
    let mut builder = match &range {
        Some(r) => {
            let mut b = HttpResponse::PartialContent();
            b.insert_header((header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end - 1, target.length)));
            b
        }
        None => HttpResponse::Ok(),
    };
    builder
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)));
    let length = range.as_ref().map_or(target.length, |r| r.end - r.start);
    if req.method() == actix_web::http::Method::HEAD {
        return Ok(builder
            .no_chunking(length)
            .streaming(futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>()));
    }
    let blob = svc.store.get(&target.sha256, range).await.map_err(crate::services::ServiceError::from)?;
    // What devices download as deltas against whole images (bytes the answer carries; a client
    // that hangs up early still counts in full).
    metrics::counter!("patchgate_target_bytes_served_total", "kind" => target.kind()).increment(length);
    builder.no_chunking(length);
    Ok(match (blob, req.conn_data::<ZeroCopy>()) {
        (Blob::File(file, range), Some(conn)) => builder.body(FileBody::new(conn, file, range)),
        (blob, _) => builder.streaming(blob.into_stream().map_err(std::io::Error::other)),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// Malformed or multi-range: serve the whole file (RFC 9110 allows ignoring Range).
    Ignore,
    Satisfiable(std::ops::Range<u64>),
    Unsatisfiable,
}

fn parse_range(raw: &str, length: u64) -> RangeRequest {
    let Some(spec) = raw.trim().strip_prefix("bytes=") else { return RangeRequest::Ignore };
    if spec.contains(',') {
        return RangeRequest::Ignore;
    }
    let Some((start, end)) = spec.split_once('-') else { return RangeRequest::Ignore };
    let (start, end) = (start.trim(), end.trim());
    let parsed = match (start.is_empty(), end.is_empty()) {
        (true, true) => return RangeRequest::Ignore,
        (true, false) => match end.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(suffix) => (length.saturating_sub(suffix), length),
            Err(_) => return RangeRequest::Ignore,
        },
        (false, _) => {
            let Ok(first) = start.parse::<u64>() else { return RangeRequest::Ignore };
            let last = if end.is_empty() {
                length.saturating_sub(1)
            } else {
                match end.parse::<u64>() {
                    Ok(last) if last >= first => last.min(length.saturating_sub(1)),
                    _ => return RangeRequest::Ignore,
                }
            };
            (first, last + 1)
        }
    };
    if parsed.0 >= length || length == 0 {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Satisfiable(parsed.0..parsed.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        let cases = [
            ("bytes=0-9", Satisfiable(0..10)),
            ("bytes=10-", Satisfiable(10..100)),
            ("bytes=-10", Satisfiable(90..100)),
            ("bytes=90-200", Satisfiable(90..100)),
            ("bytes=100-", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=5-1", Ignore),
            ("bytes=0-1,5-6", Ignore),
            ("items=0-1", Ignore),
            ("bytes=x-1", Ignore),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_range(raw, 100), want, "{raw}");
        }
    }
}
