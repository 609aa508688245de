//! Connections to endpoints: a pool per worker thread of HTTP/1.1 keep-alive connections
//! per endpoint address. A request takes an idle connection that is ready (or opens one),
//! sends, and puts the connection back at once: it is ready again when the response has
//! been read, and only a ready one is ever taken. No lock, no task per request; a request
//! that a pooled connection refused before sending it (the endpoint had closed it) is sent
//! again on a fresh connection, body included, since nothing of it went out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::proxy::Body;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections older than this are closed by [`prune`].
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made.
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, String),
    /// The connection failed while the request was sent or the response awaited.
    #[error("request to {0}: {1}")]
    Send(SocketAddr, #[source] hyper::Error),
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

thread_local! {
    static POOL: RefCell<HashMap<SocketAddr, Vec<Idle>>> = RefCell::new(HashMap::new());
}

fn take_ready(ep: SocketAddr) -> Option<SendRequest<Body>> {
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(&ep)?;
        idle.retain(|c| !c.sender.is_closed());
        let i = idle.iter().rposition(|c| c.sender.is_ready())?;
        Some(idle.swap_remove(i).sender)
    })
}

fn put_back(ep: SocketAddr, sender: SendRequest<Body>) {
    if sender.is_closed() {
        return;
    }
    POOL.with_borrow_mut(|pool| {
        pool.entry(ep).or_default().push(Idle {
            sender,
            since: Instant::now(),
        })
    });
}

async fn connect(ep: SocketAddr) -> Result<SendRequest<Body>, Error> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(ep))
        .await
        .map_err(|_| Error::Connect(ep, format!("timed out after {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| Error::Connect(ep, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Connect(ep, e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %ep, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// Send `req` (origin-form URI, Host as the client sent it) to `ep`.
pub async fn send(ep: SocketAddr, req: Request<Body>) -> Result<Response<Incoming>, Error> {
    let (mut sender, pooled) = match take_ready(ep) {
        Some(s) => (s, true),
        None => (connect(ep).await?, false),
    };
    let result = match sender.try_send_request(req).await {
        Err(mut e) if pooled => match e.take_message() {
            // Refused before anything was written: the endpoint closed this idle
            // connection. Send it on a fresh one.
            Some(req) => {
                sender = connect(ep).await?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| Error::Send(ep, e))
            }
            None => Err(Error::Send(ep, e.into_error())),
        },
        Err(e) => Err(Error::Send(ep, e.into_error())),
        Ok(res) => Ok(res),
    };
    if result.is_ok() {
        put_back(ep, sender);
    }
    result
}

/// Close this thread's connections idle for longer than the idle timeout, and forget
/// closed ones.
pub fn prune() {
    POOL.with_borrow_mut(|pool| {
        pool.retain(|_, idle| {
            idle.retain(|c| !c.sender.is_closed() && c.since.elapsed() < IDLE_TIMEOUT);
            !idle.is_empty()
        })
    });
}
