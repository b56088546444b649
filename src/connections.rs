//! Connection limits actix does not have: a cap on the open connections of
//! one peer address, and a bound on the quiet time between requests of a
//! kept-alive connection (actix times only the first request's head, so a
//! later head trickled a byte at a time would hold the connection forever).

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpMessage;

use crate::error::ApiError;

/// How long actix keeps an idle connection open for its next request.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// When the request's head was handed to the application: its body's
/// deadline counts from here.
#[derive(Debug, Clone, Copy)]
pub struct RequestStart(pub Instant);

/// Shared by every worker of a listener.
#[derive(Clone)]
pub struct ConnectionLimits {
    cap: Option<usize>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    quiet_bound: Duration,
}

impl ConnectionLimits {
    /// `cap`: open connections per peer address (`None`: no cap).
    /// `request_timeout`: the time a request's head may take.
    pub fn new(cap: Option<usize>, request_timeout: Duration) -> Self {
        ConnectionLimits {
            cap,
            open: Arc::default(),
            // Between two requests: the keep-alive wait, then the next head.
            quiet_bound: KEEP_ALIVE + request_timeout,
        }
    }

    /// For `HttpServer::on_connect`: counts the connection against its
    /// address and watches it. The state lives in the connection's
    /// extensions, which actix drops with the connection.
    pub fn on_connect(&self, io: &dyn Any, extensions: &mut Extensions) {
        let Some(stream) = io.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let (slot, refused) = match (self.cap, stream.peer_addr()) {
            (Some(cap), Ok(peer)) => match self.admit(peer.ip(), cap) {
                Some(slot) => (Some(slot), false),
                None => (None, true),
            },
            _ => (None, false),
        };
        let (closed, on_close) = tokio::sync::oneshot::channel();
        let connection = Rc::new(Connection {
            refused,
            in_flight: Cell::new(0),
            quiet_since: Cell::new(Instant::now()),
            _slot: slot,
            _closed: closed,
        });
        #[cfg(unix)]
        {
            // A duplicate of the socket: shutting it down ends the
            // connection actix holds, and it cannot name another socket
            // later (a bare descriptor number could, once reused).
            use std::os::fd::AsFd;
            match stream.as_fd().try_clone_to_owned() {
                Ok(fd) => {
                    actix_web::rt::spawn(watch(
                        Rc::downgrade(&connection),
                        std::net::TcpStream::from(fd),
                        self.quiet_bound,
                        on_close,
                    ));
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch a connection"),
            }
        }
        #[cfg(not(unix))]
        drop(on_close);
        extensions.insert(connection);
    }

    fn admit(&self, ip: IpAddr, cap: usize) -> Option<Slot> {
        // An IPv6 host usually holds its whole /64.
        let ip = crate::auth::throttle::client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= cap {
            if *count == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            ip,
            open: self.open.clone(),
        })
    }

    /// Addresses with open connections (tests: the table stays bounded).
    pub fn tracked_addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One admitted connection's place in the per-address count.
struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Per connection, on its worker thread.
struct Connection {
    /// Over the cap: every request is answered 429 and the connection closed.
    refused: bool,
    in_flight: Cell<u32>,
    /// Since when no request has been in the application.
    quiet_since: Cell<Instant>,
    _slot: Option<Slot>,
    /// Dropped with the connection: the watcher stops at once.
    _closed: tokio::sync::oneshot::Sender<()>,
}

/// Shuts the connection down once it has been quiet (no request in the
/// application) for longer than `bound`.
#[cfg(unix)]
async fn watch(
    connection: Weak<Connection>,
    socket: std::net::TcpStream,
    bound: Duration,
    mut on_close: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let wake = match connection.upgrade() {
            None => return,
            Some(c) if c.in_flight.get() > 0 => Instant::now() + bound,
            Some(c) => c.quiet_since.get() + bound,
        };
        if tokio::time::timeout_at(wake.into(), &mut on_close)
            .await
            .is_ok()
        {
            return;
        }
        let Some(c) = connection.upgrade() else {
            return;
        };
        if c.in_flight.get() == 0 && c.quiet_since.get().elapsed() >= bound {
            tracing::debug!("closing a connection quiet for too long");
            let _ = socket.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// A request in the application: the connection is not quiet.
struct Busy(Rc<Connection>);

impl Busy {
    fn new(connection: Rc<Connection>) -> Self {
        connection.in_flight.set(connection.in_flight.get() + 1);
        Busy(connection)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        c.in_flight.set(c.in_flight.get().saturating_sub(1));
        c.quiet_since.set(Instant::now());
    }
}

/// Middleware: refuses requests of a connection over the cap (without
/// reading their body), and marks the connection busy while a request is
/// in the application.
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let connection = req.conn_data::<Rc<Connection>>().cloned();
    if connection.as_ref().is_some_and(|c| c.refused) {
        return Ok(req.error_response(ApiError::TooManyConnections));
    }
    req.extensions_mut().insert(RequestStart(Instant::now()));
    let _busy = connection.map(Busy::new);
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_per_address_is_capped_and_forgets_closed_addresses() {
        let limits = ConnectionLimits::new(Some(2), Duration::from_secs(1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.admit(a, 2);
        let second = limits.admit(a, 2);
        assert!(first.is_some() && second.is_some());
        assert!(limits.admit(a, 2).is_none(), "a third is over the cap");
        let other = limits.admit(b, 2);
        assert!(other.is_some(), "another address has its own count");
        assert_eq!(limits.tracked_addresses(), 2);
        drop(first);
        let again = limits.admit(a, 2);
        assert!(again.is_some(), "a closed connection frees its place");
        drop((second, again, other));
        assert_eq!(
            limits.tracked_addresses(),
            0,
            "no entry outlives its connections"
        );
    }
}
