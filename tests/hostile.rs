//! Hostile clients against a real `serve` process, over raw TCP: a request whose headers never
//! end and a body trickled a byte a second are cut off within the configured timeouts
//! (short ones here, by environment), and deeply nested JSON is refused with 400 without
//! harm to the server. (Bodies over 1 MiB: tests/http.rs, 413 `body_too_large`.)

use kokuho_testing as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::process::{http, start_with, stop, token_of, Server};
use common::{Kind, TestDb};

const HEADER_TIMEOUT: u64 = 2;
const BODY_TIMEOUT: u64 = 3;
/// What the server may take beyond its timeout to close (a busy machine).
const SLACK: Duration = Duration::from_secs(5);

fn server(db: &TestDb, dir: &std::path::Path) -> Server {
    start_with(
        db,
        dir,
        &[
            ("KOKUHO_HEADER_TIMEOUT_SECONDS", &HEADER_TIMEOUT.to_string()),
            ("KOKUHO_BODY_TIMEOUT_SECONDS", &BODY_TIMEOUT.to_string()),
        ],
    )
}

/// Sends `head` then trickles `trickle` a byte a second (until the server closes), while
/// reading what the server answers; returns that answer and when the connection closed.
fn trickle(addr: &str, head: String, trickle: Vec<u8>) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut writer = s.try_clone().unwrap();
    let dripping = std::thread::spawn(move || {
        for b in trickle {
            std::thread::sleep(Duration::from_secs(1));
            if writer.write_all(&[b]).is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let closed = started.elapsed();
    let _ = s.shutdown(std::net::Shutdown::Both);
    dripping.join().unwrap();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server(&db, dir.path());
    let addr = server.addr.clone();

    // Headers that never end: a byte a second of one endless header line.
    let (_, closed) = trickle(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ".into(),
        vec![b'a'; 60],
    );
    assert!(
        closed < Duration::from_secs(HEADER_TIMEOUT) + SLACK,
        "a header never finished held the connection {closed:?}"
    );

    // A body trickled a byte a second, each byte well within any per-read timeout.
    let token = token_of(&addr).unwrap();
    let head = format!(
        "POST /v1/persons/900/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{"
    );
    let (answer, closed) = trickle(&addr, head, vec![b' '; 60]);
    assert!(
        closed < Duration::from_secs(BODY_TIMEOUT) + SLACK,
        "a trickled body held the connection {closed:?}"
    );
    // The answer, when it reached the client before the connection was reset.
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.is_empty() || answer.contains("body_timeout"), "{answer}");

    // The server is unharmed and a normal client is served.
    let (status, _) = http(&addr, "GET", "/healthz", "");
    assert_eq!(status, 200);
    stop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_json_is_refused_with_400() {
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server(&db, dir.path());
    let addr = server.addr.clone();
    for depth in [10_000, 100_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let inside = format!(r#"{{"type": "registered", "name": {arrays}}}"#);
        for body in [arrays, inside] {
            let (status, answer) = http(&addr, "POST", "/v1/persons/901/events", &body);
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"]["code"], "invalid_json", "{answer}");
        }
    }
    // Nothing was recorded and the process is still there.
    let (status, _) = http(&addr, "GET", "/v1/persons/901", "");
    assert_eq!(status, 404);
    let (status, _) = http(&addr, "GET", "/healthz", "");
    assert_eq!(status, 200);
    stop(server);
}
