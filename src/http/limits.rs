//! Limits no client can hold a connection open past, with or without a credential.
//!
//! - Every request body is read through [`PacedBody`]. On every route but uploads the whole
//!   body must arrive within `body_timeout_seconds` of the request head; an upload (a
//!   `multipart/*` body) must instead keep up `upload_min_bytes_per_second`, measured over each
//!   `upload_rate_window_seconds`, however long it is. A body that falls behind is cut: the
//!   handler sees a payload error (so an upload removes its staged file), the answer becomes
//!   408 and the connection is closed.
//! - A declared `Content-Length` above what the route kind can ever accept is answered 413
//!   before a byte of the body is read, and the connection is closed.
//! - Open connections are counted; at the cap ([`connection_cap`]) new ones wait in the listen
//!   backlog instead of failing on the open-file limit, and the server says so in its log.
//!
//! Header deadlines and idle keep-alive connections are actix's own settings (`startup.rs`).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::error::json_error;
use crate::config::Config;

/// Room in an upload for the form's other fields (a product role of up to 4 MiB, notes) and
/// the multipart framing, on top of the largest file.
const UPLOAD_FORM_ROOM: u64 = 8 * 1024 * 1024;
/// The largest body any route but uploads accepts ([`super::MAX_ROLE_BODY`]) and a MiB of
/// room. Other routes have smaller caps of their own.
const MAX_OTHER_BODY: u64 = super::MAX_ROLE_BODY as u64 + 1024 * 1024;

/// What request bodies must keep to; app data, read by [`pace_bodies`].
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    body_timeout: Duration,
    upload_min_bytes_per_second: u64,
    upload_window: Duration,
    max_upload_bytes: u64,
}

impl BodyLimits {
    /// The limits `config` sets.
    pub fn from_config(config: &Config) -> Self {
        Self {
            body_timeout: Duration::from_secs(config.body_timeout_seconds),
            upload_min_bytes_per_second: config.upload_min_bytes_per_second,
            upload_window: Duration::from_secs(config.upload_rate_window_seconds),
            max_upload_bytes: config.max_upload_bytes,
        }
    }
}

/// Why a body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Deadline,
    TooSlow,
}

/// How a body's progress is judged.
#[derive(Debug)]
enum Pace {
    /// The whole body by this instant.
    Deadline(Instant),
    /// At least `min` bytes in every window of `window`.
    Rate { min: u64, window: Duration, window_start: Instant, received: u64 },
}

impl Pace {
    /// When the body must next be judged.
    fn due(&self) -> Instant {
        match self {
            Pace::Deadline(at) => *at,
            Pace::Rate { window, window_start, .. } => *window_start + *window,
        }
    }

    /// Judges the body at `now`, once `due()` has passed: a cut, or a new window.
    fn judge(&mut self, now: Instant) -> Option<Cut> {
        match self {
            Pace::Deadline(_) => Some(Cut::Deadline),
            Pace::Rate { min, window_start, received, .. } => {
                if *received < *min {
                    return Some(Cut::TooSlow);
                }
                *window_start = now;
                *received = 0;
                None
            }
        }
    }
}

/// What a body leaves to [`pace_bodies`] once the handler is done with it.
#[derive(Default)]
struct BodyOutcome {
    /// Why it was cut, if it was.
    cut: Option<Cut>,
    /// The unread rest of a body the handler cut or dropped before its end: see [`HoldingBody`].
    rest: Option<UnreadBody>,
}

/// The unread rest of a request body.
struct UnreadBody {
    _rest: Payload,
}

/// A response body that holds the unread rest of its request's body until it has been sent.
///
/// actix closes a connection whose request body is still wanted and unread once the answer is
/// out, but drains one that was dropped; a chunked body has no end to drain to while its client
/// trickles or stalls. actix decides when the answer's last byte is written, so the rest lives
/// as long as the answer's body, not its head.
pub struct HoldingBody {
    inner: BoxBody,
    _rest: Option<UnreadBody>,
}

impl MessageBody for HoldingBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// A request body that is cut when it falls behind its [`Pace`].
struct PacedBody {
    inner: Payload,
    pace: Pace,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the body has ended (or failed): nothing is left to keep.
    ended: bool,
    outcome: Rc<RefCell<BodyOutcome>>,
}

impl PacedBody {
    fn cut_now(&mut self, why: Cut) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.outcome.borrow_mut().cut = Some(why);
        self.keep_rest();
        self.timer = None;
        let error = io::Error::new(io::ErrorKind::TimedOut, "the request body did not arrive in time");
        Poll::Ready(Some(Err(PayloadError::Io(error))))
    }

    fn keep_rest(&mut self) {
        if !self.ended {
            self.ended = true;
            let rest = std::mem::replace(&mut self.inner, Payload::None);
            self.outcome.borrow_mut().rest = Some(UnreadBody { _rest: rest });
        }
    }
}

impl Drop for PacedBody {
    fn drop(&mut self) {
        self.keep_rest();
    }
}

impl Stream for PacedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = Instant::now();
                if let Pace::Rate { received, .. } = &mut this.pace {
                    *received = received.saturating_add(chunk.len() as u64);
                }
                if now >= this.pace.due()
                    && let Some(cut) = this.pace.judge(now)
                {
                    return this.cut_now(cut);
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(other) => {
                this.ended = true;
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        // Nothing arrived: wake up when the body is due, whether or not a byte comes.
        loop {
            let due = this.pace.due();
            let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(cut) = this.pace.judge(Instant::now()) {
                return this.cut_now(cut);
            }
        }
    }
}

/// Whether the request is an upload (a multipart form).
fn is_upload(req: &ServiceRequest) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/"))
}

/// A JSON error that also closes the connection (the rest of the body is never read).
fn closing_error(status: StatusCode, code: &str, message: &str) -> actix_web::HttpResponse {
    let mut response = json_error(status, code, message);
    response.head_mut().set_connection_type(ConnectionType::Close);
    response
}

/// `response` with `rest` held by its body.
fn holding<B, C: MessageBody + 'static>(
    response: ServiceResponse<C>,
    rest: Option<UnreadBody>,
) -> ServiceResponse<EitherBody<B, HoldingBody>> {
    response.map_body(|_, body| EitherBody::right(HoldingBody { inner: BoxBody::new(body), _rest: rest }))
}

/// Middleware: paces every request body and refuses declared lengths no route accepts.
pub async fn pace_bodies<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, HoldingBody>>, actix_web::Error> {
    let Some(limits) = req.app_data::<BodyLimits>().copied() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let upload = is_upload(&req);
    let cap = if upload { limits.max_upload_bytes.saturating_add(UPLOAD_FORM_ROOM) } else { MAX_OTHER_BODY };
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        let what = if upload { "an upload" } else { "a request body on this route" };
        let message = format!("the body declares {} bytes; {what} may be at most {cap} bytes", declared.unwrap_or(0));
        let response = closing_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message);
        return Ok(holding(req.into_response(response), None));
    }
    let (http_req, payload) = req.into_parts();
    if matches!(payload, Payload::None) {
        let req = ServiceRequest::from_parts(http_req, payload);
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let now = Instant::now();
    let pace = if upload {
        let seconds = limits.upload_window.as_secs().max(1);
        let min = limits.upload_min_bytes_per_second.saturating_mul(seconds);
        Pace::Rate { min, window: limits.upload_window, window_start: now, received: 0 }
    } else {
        Pace::Deadline(now + limits.body_timeout)
    };
    let outcome = Rc::new(RefCell::new(BodyOutcome::default()));
    let body = PacedBody { inner: payload, pace, timer: None, ended: false, outcome: outcome.clone() };
    let req = ServiceRequest::from_parts(http_req, Payload::Stream { payload: Box::pin(body) });
    let res = next.call(req).await?;
    let BodyOutcome { cut, rest } = std::mem::take(&mut *outcome.borrow_mut());
    let Some(why) = cut else {
        return Ok(if rest.is_some() { holding(res, rest) } else { res.map_into_left_body() });
    };
    let (code, message) = match why {
        Cut::Deadline => {
            ("body_timeout", format!("the request body did not arrive within {} s", limits.body_timeout.as_secs()))
        }
        Cut::TooSlow => (
            "upload_too_slow",
            format!(
                "the upload sent less than {} bytes a second over {} s; it was cut and nothing was kept",
                limits.upload_min_bytes_per_second,
                limits.upload_window.as_secs()
            ),
        ),
    };
    let (http_req, _) = res.into_parts();
    let response = closing_error(StatusCode::REQUEST_TIMEOUT, code, &message);
    Ok(holding(ServiceResponse::new(http_req, response), rest))
}

/// The connection cap in effect: `max_connections` if configured, else what the open-file limit
/// leaves after the database pool, blob files, logs and the runtime's own descriptors.
pub fn connection_cap(configured: Option<usize>) -> (usize, Option<u64>) {
    let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let cap = configured.unwrap_or_else(|| match open_files {
        Some(n) if n <= 512 => usize::try_from(n / 2).unwrap_or(1).max(1),
        Some(n) => usize::try_from(n - 256).unwrap_or(usize::MAX).min(MAX_DEFAULT_CONNECTIONS),
        None => MAX_DEFAULT_CONNECTIONS,
    });
    (cap, open_files)
}

/// The default cap when the open-file limit allows more (actix's own default is 25 000 a worker).
const MAX_DEFAULT_CONNECTIONS: usize = 50_000;

/// Counts open connections and says in the log when the cap is reached (at most every 10 s).
#[derive(Debug)]
pub struct ConnectionCount {
    open: AtomicUsize,
    cap: usize,
    warned_at: AtomicU64,
    started: std::time::Instant,
}

/// Held in a connection's data; the count drops when the connection does.
struct OpenConnection(Arc<ConnectionCount>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("patchgate_http_connections_open").decrement(1.0);
    }
}

impl ConnectionCount {
    /// A count for a server that accepts at most `cap` connections.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            cap,
            warned_at: AtomicU64::new(0),
            started: std::time::Instant::now(),
        })
    }

    /// Registers a new connection (call from `HttpServer::on_connect`).
    pub fn opened(self: &Arc<Self>, data: &mut actix_web::dev::Extensions) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("patchgate_http_connections_open").increment(1.0);
        data.insert(OpenConnection(self.clone()));
        if open >= self.cap {
            metrics::counter!("patchgate_http_connection_cap_reached_total").increment(1);
            // Seconds since start, plus one so that the first warning is never suppressed.
            let now = self.started.elapsed().as_secs() + 1;
            let last = self.warned_at.load(Ordering::Relaxed);
            if (last == 0 || now >= last + 10)
                && self.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(
                    open,
                    cap = self.cap,
                    "connection cap reached: new connections wait until others close. If clients are \
                     legitimate, raise max_connections and the open-file limit; stalled clients are cut \
                     by the header and body timeouts"
                );
            }
        }
    }
}
