//! Talking to the patchgate server: HTTPS (plain HTTP only on loopback), enrollment, signed
//! reports, and [`TufTransport`], the tough `Transport` the agent uses for both repositories
//! (tough's own cannot add the device token or trust a custom CA).
//!
//! Must not decide anything about updates: it carries bytes and maps HTTP failures to
//! [`AgentError::Network`].

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use patchgate_protocol::{EnrollAnswer, Envelope, ReportAnswer};
use serde::Serialize;
use url::Url;

use crate::error::AgentError;

/// Whether `url` may be used: `https`, or `http` to a loopback host.
pub fn check_server_url(url: &Url) -> Result<(), AgentError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(AgentError::refused(
            "insecure_url",
            format!("{url}: plain HTTP is allowed only to a loopback address; use https"),
        )),
        other => Err(AgentError::Usage(format!("{url}: unsupported scheme {other:?}"))),
    }
}

/// Whether `url` names a loopback host.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// An HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Net {
    client: reqwest::Client,
    base: Url,
}

/// Builds the HTTP client: bounded connect and read timeouts (never a total one: a 256 MiB image
/// on a slow link may take long), and, with `ca_file`, trust in those CAs only. It asks for gzip
/// and decodes it: the server gzips large metadata files (a snapshot listing a thousand
/// products shrinks to about a sixth); length limits and hashes apply to the decoded bytes.
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, AgentError> {
    let mut builder = reqwest::Client::builder()
        // Never followed blindly: one could leave HTTPS or the host. Only a target download
        // follows one, under its own rules (`download::redirect_target`).
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("patchgate-agent/", env!("CARGO_PKG_VERSION")))
        .gzip(true);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| AgentError::Usage(format!("reading {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| AgentError::Usage(format!("{}: not PEM certificates: {e}", path.display())))?;
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| AgentError::Local(format!("building the HTTP client: {e}")))
}

impl Net {
    /// A client for `server` (checked: HTTPS except on loopback).
    pub fn new(server: &str, client: reqwest::Client) -> Result<Self, AgentError> {
        let mut base = Url::parse(server).map_err(|e| AgentError::Usage(format!("--server {server:?}: {e}")))?;
        check_server_url(&base)?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self { client, base })
    }

    /// The underlying client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `base` joined with `path` (no leading slash).
    pub fn url(&self, path: &str) -> Result<Url, AgentError> {
        self.base.join(path).map_err(|e| AgentError::Usage(format!("{path}: {e}")))
    }

    /// `POST /api/v1/devices/enroll`.
    pub async fn enroll<T: Serialize>(&self, envelope: &Envelope<T>) -> Result<EnrollAnswer, AgentError> {
        let url = self.url("api/v1/devices/enroll")?;
        let res = self.client.post(url.clone()).json(envelope).send().await.map_err(|e| network(&url, e))?;
        json_answer(&url, res).await
    }

    /// `POST /api/v1/devices/{id}/report`. A 409 `stale_counter` comes back as
    /// [`ReportError::StaleCounter`] so the caller can move its counter on and sign again.
    pub async fn report<T: Serialize>(
        &self,
        device_id: &str,
        token: &str,
        envelope: &Envelope<T>,
    ) -> Result<ReportAnswer, ReportError> {
        let url = self.url(&format!("api/v1/devices/{device_id}/report"))?;
        let res = self
            .client
            .post(url.clone())
            .bearer_auth(token)
            .json(envelope)
            .send()
            .await
            .map_err(|e| network(&url, e))?;
        if res.status() == reqwest::StatusCode::CONFLICT {
            let bytes = read_limited(res, MAX_ANSWER_BYTES).await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if body["error"] == "stale_counter"
                && let Some(last) = body["last_counter"].as_u64()
            {
                return Err(ReportError::StaleCounter(last));
            }
            return Err(ReportError::Agent(AgentError::Network(format!("{url}: 409 {body}"))));
        }
        Ok(json_answer(&url, res).await?)
    }

    /// A tough transport for this server, sending `token` if given (the director's paths).
    pub fn transport(&self, token: Option<String>) -> TufTransport {
        TufTransport::new(self.client.clone(), token)
    }
}

/// Why a report was not accepted.
#[derive(Debug)]
pub enum ReportError {
    /// The server has seen this counter or a later one (the last it saw).
    StaleCounter(u64),
    /// Anything else.
    Agent(AgentError),
}

impl From<AgentError> for ReportError {
    fn from(err: AgentError) -> Self {
        Self::Agent(err)
    }
}

/// A network error with its whole chain of causes: reqwest's own message ("error sending
/// request for url …") does not say whether the connection was refused, timed out or failed
/// its TLS check.
fn network(url: &Url, err: reqwest::Error) -> AgentError {
    let mut message = format!("{url}: {err}");
    let mut cause = std::error::Error::source(&err);
    while let Some(e) = cause {
        message.push_str(": ");
        message.push_str(&e.to_string());
        cause = e.source();
    }
    AgentError::Network(message)
}

/// Decodes a 2xx JSON answer; anything else becomes an error carrying the server's message.
async fn json_answer<T: serde::de::DeserializeOwned>(url: &Url, res: reqwest::Response) -> Result<T, AgentError> {
    let status = res.status();
    let bytes = read_limited(res, MAX_ANSWER_BYTES).await?;
    if !status.is_success() {
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let message =
            body["message"].as_str().map(str::to_owned).unwrap_or_else(|| String::from_utf8_lossy(&bytes).into());
        let message = format!("{url}: the server answered {status}: {message}");
        return Err(if is_permanent(status) { AgentError::Denied(message) } else { AgentError::Network(message) });
    }
    serde_json::from_slice(&bytes).map_err(|e| AgentError::Network(format!("{url}: unreadable answer: {e}")))
}

/// Whether an error answer will not change by asking again: a 4xx other than a timeout (408),
/// "too early" (425) or rate limiting (429). 5xx answers are the server's trouble, retried.
fn is_permanent(status: reqwest::StatusCode) -> bool {
    status.is_client_error() && !matches!(status.as_u16(), 408 | 425 | 429)
}

/// The largest JSON answer the agent reads (enrollment, report, error bodies): far above what
/// patchgate sends, far below what would hurt a small device.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_limited(res: reqwest::Response, limit: usize) -> Result<Vec<u8>, AgentError> {
    let url = res.url().clone();
    let mut stream = res.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| network(&url, e))?;
        if out.len() + chunk.len() > limit {
            return Err(AgentError::Network(format!("{url}: the answer is larger than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// tough's `Transport` over our HTTP client, optionally with the device token.
#[derive(Debug, Clone)]
pub struct TufTransport {
    client: reqwest::Client,
    token: Option<String>,
}

impl TufTransport {
    /// A transport over `client`, sending `token` as a bearer token if given.
    pub fn new(client: reqwest::Client, token: Option<String>) -> Self {
        Self { client, token }
    }
}

#[tough::async_trait]
impl tough::Transport for TufTransport {
    async fn fetch(&self, url: Url) -> Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind};
        let mut request = self.client.get(url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let res = request
            .send()
            .await
            .map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e))?;
        // 403 too: a repository may hide what does not exist (TUF clients treat both as absent).
        if matches!(res.status().as_u16(), 403 | 404) && self.token.is_none() || res.status() == 404 {
            return Err(TransportError::new(TransportErrorKind::FileNotFound, url.as_str()));
        }
        if !res.status().is_success() {
            return Err(TransportError::new(TransportErrorKind::Other, format!("{url}: HTTP {}", res.status())));
        }
        let source = url.to_string();
        let stream = res
            .bytes_stream()
            .map_err(move |e| TransportError::new_with_cause(TransportErrorKind::Other, source.clone(), e));
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in ["https://updates.example.com", "http://127.0.0.1:8080", "http://[::1]:80", "http://localhost:1"] {
            assert!(check_server_url(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        let err = check_server_url(&Url::parse("http://updates.example.com").unwrap()).unwrap_err();
        assert_eq!(err.refusal().unwrap().code, "insecure_url");
        assert!(matches!(check_server_url(&Url::parse("ftp://x").unwrap()), Err(AgentError::Usage(_))));
    }
}
