//! Connections at the TCP level: slow heads and bodies are cut, and one
//! address cannot hold more than its share of connections. Raw sockets, so
//! the test decides every byte and its timing. The behaviour does not
//! depend on the database: SQLite only.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Backend, TestApp};

const TIMEOUT_2S: (&str, &str) = ("TOKEND__SERVER__REQUEST_TIMEOUT_MS", "2000");

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connect")
}

/// A response as read off the socket: status, lower-cased head, body.
#[derive(Debug)]
struct RawReply {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response (the body by its Content-Length). `None`: the
/// connection ended before a whole response.
async fn read_reply(stream: &mut TcpStream) -> Option<RawReply> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            while buffer.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
            return Some(RawReply { status, head, body });
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server has closed the connection (reads end), waiting at
/// most `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// Writes `bytes` one at a time, `every` apart, until done or the server
/// closes; returns the write half's errors silently (the server may cut in).
fn trickle(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: tokend\r\n\r\n";

/// A body trickled a byte every 500 ms: 408 with DRF's wording once the
/// request timeout (2 s) has passed since the head, and the connection is
/// closed, instead of being held for as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_with_408_at_the_request_timeout() {
    let app = spawn_app_with(Backend::Sqlite, &[TIMEOUT_2S]).await;
    let stream = connect(&app).await;
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            b"POST /api/token/ HTTP/1.1\r\nHost: tokend\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n",
        )
        .await
        .expect("head sent");
    let started = Instant::now();
    let body = vec![b' '; 100];
    let _trickle = trickle(writer, body, Duration::from_millis(500));
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), reader.read_to_end(&mut response))
        .await
        .expect("the server answers and closes within 8 s, not after the whole trickle");
    let elapsed = started.elapsed();
    assert!(read.is_ok(), "{read:?}");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nconnection: close"),
        "{text}"
    );
    assert_eq!(body, r#"{"detail":"Request body not received in time."}"#);
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(5),
        "answered and closed after {elapsed:?}"
    );
}

/// The first request's head trickled: actix's 408 (no body) and the
/// connection closed at the request timeout (2 s, not actix's 5 s default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_first_head_is_cut_at_the_request_timeout() {
    let app = spawn_app_with(Backend::Sqlite, &[TIMEOUT_2S]).await;
    let started = Instant::now();
    let stream = connect(&app).await;
    let (mut reader, writer) = stream.into_split();
    let _trickle = trickle(writer, GET_HEALTHZ.to_vec(), Duration::from_millis(500));
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut response))
        .await
        .expect("closed within 10 s");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
}

/// After a first request, the next head trickled on the kept-alive
/// connection: actix times only the first head, so without a bound of its
/// own the connection would stay open as long as the trickle lasts. It is
/// shut once quiet for the keep-alive (5 s) plus the request timeout (2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_later_head_on_a_kept_alive_connection_is_cut() {
    let app = spawn_app_with(Backend::Sqlite, &[TIMEOUT_2S]).await;
    let mut stream = connect(&app).await;
    stream.write_all(GET_HEALTHZ).await.expect("request sent");
    let first = read_reply(&mut stream).await.expect("first reply");
    assert_eq!(first.status, 200, "{first:?}");
    let started = Instant::now();
    let (mut reader, writer) = stream.into_split();
    // 40 bytes at 500 ms: 20 s of trickle, longer than the bound.
    let _trickle = trickle(writer, GET_HEALTHZ.to_vec(), Duration::from_millis(500));
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut rest))
        .await
        .expect("the connection is closed within 15 s");
    let elapsed = started.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        elapsed >= Duration::from_millis(6500) && elapsed < Duration::from_secs(9),
        "closed after {elapsed:?}"
    );
}

/// A kept-alive connection that sends nothing is closed after the
/// keep-alive (5 s), as actix does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let app = spawn_app_with(Backend::Sqlite, &[TIMEOUT_2S]).await;
    let mut stream = connect(&app).await;
    stream.write_all(GET_HEALTHZ).await.expect("request sent");
    assert_eq!(read_reply(&mut stream).await.expect("reply").status, 200);
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(8)).await);
    assert!(started.elapsed() >= Duration::from_millis(4500));
}

/// With a cap of 3 connections per address, a 4th and 5th connection from
/// 127.0.0.1 are answered 429 and closed at once (their body unread); once
/// some of the first three are closed, new connections are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("TOKEND__SERVER__MAX_CONNECTIONS_PER_IP", "3")],
    )
    .await;
    let mut admitted = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        stream.write_all(GET_HEALTHZ).await.expect("sent");
        let reply = read_reply(&mut stream).await.expect("reply");
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, r#"{"status":"ok"}"#)
        );
        admitted.push(stream);
    }
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        // A body announced and never sent: refused without waiting for it.
        stream
            .write_all(
                b"POST /api/token/ HTTP/1.1\r\nHost: tokend\r\nContent-Type: application/json\r\n\
                  Content-Length: 1000\r\n\r\n",
            )
            .await
            .expect("sent");
        let reply = tokio::time::timeout(Duration::from_secs(2), read_reply(&mut stream))
            .await
            .expect("answered at once")
            .expect("a reply");
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (
                429,
                r#"{"detail":"Too many open connections from this address."}"#
            )
        );
        assert!(
            reply.head.contains("\r\nconnection: close"),
            "{}",
            reply.head
        );
        assert!(reply.head.contains("\r\nretry-after: 1"), "{}", reply.head);
        assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    }
    // The admitted connections still work.
    admitted[2].write_all(GET_HEALTHZ).await.expect("sent");
    assert_eq!(
        read_reply(&mut admitted[2]).await.expect("reply").status,
        200
    );
    // Closing two frees their places (the server sees the close at once).
    admitted.truncate(1);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut served = 0;
    let mut reopened = Vec::new();
    while served < 2 {
        let mut stream = connect(&app).await;
        stream.write_all(GET_HEALTHZ).await.expect("sent");
        let reply = read_reply(&mut stream).await.expect("reply");
        if reply.status == 200 {
            served += 1;
            reopened.push(stream);
        } else {
            assert_eq!(reply.status, 429);
            assert!(Instant::now() < deadline, "closed places never freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // And the cap holds again: 1 + 2 open.
    let mut stream = connect(&app).await;
    stream.write_all(GET_HEALTHZ).await.expect("sent");
    assert_eq!(read_reply(&mut stream).await.expect("reply").status, 429);
}

/// Many connections at once from one address: never more than the cap
/// served at the same time, whatever the interleaving across workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_under_parallel_connections() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("TOKEND__SERVER__MAX_CONNECTIONS_PER_IP", "5")],
    )
    .await;
    let mut streams = Vec::new();
    for _ in 0..40 {
        streams.push(connect(&app).await);
    }
    let replies = futures::future::join_all(streams.iter_mut().map(|stream| async move {
        stream.write_all(GET_HEALTHZ).await.expect("sent");
        read_reply(stream).await.map(|r| r.status)
    }))
    .await;
    let ok = replies.iter().filter(|s| **s == Some(200)).count();
    let refused = replies.iter().filter(|s| **s == Some(429)).count();
    assert_eq!((ok, refused), (5, 35), "{replies:?}");
}
