//! Target downloads on the kernel's zero-copy path (`sendfile(2)`).
//!
//! actix-http copies every chunk of a response body into its connection's write buffer before
//! the socket sees it, so a file streamed through it is copied twice in user space (read into a
//! buffer, then into the write buffer) where nginx hands the page cache to the socket. Here the
//! server gives actix's dispatcher a [`Connection`] instead of the bare socket, and a
//! [`FileBody`] on that connection moves a local blob's bytes with `sendfile` while the
//! dispatcher writes only the response head.
//!
//! Framing stays actix's: the response carries its `Content-Length` and is not chunked, so the
//! dispatcher writes the head, then waits for the body to end, which yields no bytes of its own.
//! The one ordering rule is that the head must be on the socket before the file's first byte.
//! The dispatcher flushes its I/O only once its write buffer has gone to the socket whole, so
//! the body waits for the first flush after its first poll, and from then on nothing but the
//! body writes to the connection until the body ends.

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// At most this much per `sendfile` call (a page-cache miss reads this much from disk on the
/// worker, as nginx's workers do without its thread pool).
const CALL_MAX: usize = 2 * 1024 * 1024;

/// At most this much per poll of the body, so that one fast download does not hold its worker
/// from the other connections on it.
const POLL_BUDGET: u64 = 16 * 1024 * 1024;

struct Shared {
    stream: RefCell<TcpStream>,
    /// How many times the dispatcher has flushed, each time after its write buffer emptied.
    flushes: Cell<u64>,
    /// A body waiting for the next flush.
    waiting: Cell<Option<Waker>>,
}

/// A client connection's socket as actix's HTTP/1 dispatcher drives it.
pub struct Connection(Rc<Shared>);

/// What a request on a [`Connection`] sends a file with (in the connection's data).
#[derive(Clone)]
pub struct ZeroCopy(Rc<Shared>);

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        Self(Rc::new(Shared { stream: RefCell::new(stream), flushes: Cell::new(0), waiting: Cell::new(None) }))
    }

    /// Puts the connection's [`ZeroCopy`] in its data, for the requests on it.
    pub fn offer(&self, data: &mut actix_web::dev::Extensions) {
        data.insert(ZeroCopy(self.0.clone()));
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.stream.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.stream.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.stream.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.stream.borrow().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut *self.0.stream.borrow_mut()).poll_flush(cx);
        if flushed.is_ready() {
            self.0.flushes.set(self.0.flushes.get() + 1);
            if let Some(waker) = self.0.waiting.take() {
                waker.wake();
            }
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.stream.borrow_mut()).poll_shutdown(cx)
    }
}

/// Where the response head is.
enum Head {
    /// Not polled yet: the head may still be in the dispatcher's write buffer.
    Unseen,
    /// The dispatcher had flushed this many times at the first poll; the next flush sends it.
    Queued(u64),
    Sent,
}

/// A response body that sends `range` of `file` straight from the page cache to the socket.
/// The response must be built with `no_chunking(range length)`.
pub struct FileBody {
    conn: Rc<Shared>,
    file: std::fs::File,
    range: Range<u64>,
    head: Head,
}

impl FileBody {
    pub fn new(conn: &ZeroCopy, file: std::fs::File, range: Range<u64>) -> Self {
        Self { conn: conn.0.clone(), file, range, head: Head::Unseen }
    }

    fn wait_for_flush(&self, cx: &Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        self.conn.waiting.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl MessageBody for FileBody {
    type Error = io::Error;

    /// A stream as far as actix knows: it writes the `Content-Length` the handler set and
    /// expects no bytes from this body.
    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let this = self.get_mut();
        match this.head {
            Head::Unseen => {
                this.head = Head::Queued(this.conn.flushes.get());
                return this.wait_for_flush(cx);
            }
            Head::Queued(at) if this.conn.flushes.get() == at => return this.wait_for_flush(cx),
            Head::Queued(_) => this.head = Head::Sent,
            Head::Sent => {}
        }
        let stream = this.conn.stream.borrow();
        let mut sent = 0;
        while this.range.start < this.range.end {
            if sent >= POLL_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match stream.poll_write_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(())) => {}
            }
            let count = usize::try_from(this.range.end - this.range.start).map_or(CALL_MAX, |n| n.min(CALL_MAX));
            let mut offset = this.range.start;
            let result = stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&*stream, &this.file, Some(&mut offset), count).map_err(io::Error::from)
            });
            match result {
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob is shorter than its recorded length",
                    ))));
                }
                Ok(n) => {
                    this.range.start += n as u64;
                    sent += n as u64;
                }
                // `try_io` cleared the readiness: the next `poll_write_ready` waits for room.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        Poll::Ready(None)
    }
}
