//! The product binary as an operator runs it: a server process on a free port (with a token of
//! its own for the requests of [`http`]), the key files a deployment configures, and raw HTTP
//! requests with nothing between the test and the socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::TestDb;

/// The `kokuho-ledger` binary cargo built beside the test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/kokuho-ledger`), or beside a tool's
/// binary (`target/<profile>/ledger-bench`).
pub static BIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let exe = std::env::current_exe().expect("the test executable");
    let beside = exe.with_file_name("kokuho-ledger");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let bin = if beside.exists() {
        beside
    } else {
        dir.join("kokuho-ledger")
    };
    assert!(bin.exists(), "{} is not built", bin.display());
    bin.display().to_string()
});

pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

/// A test that fails never leaves its server running.
impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test shows whether the server was still up and what it logged last.
            let status = self.child.try_wait();
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("server {} exit status {status:?}; its last log lines:", self.addr);
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stop(mut server: Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// The checkpoint key a PostgreSQL deployment must configure, made by `audit keygen` once.
pub fn audit_key(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("audit.key");
    if !path.exists() {
        let out = Command::new(&*BIN)
            .args(["audit", "keygen", "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    path
}

/// The vault key a deployment configures, made by `vault keygen` once.
pub fn vault_key(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("vault.key");
    if !path.exists() {
        let out = Command::new(&*BIN)
            .args(["vault", "keygen", "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    path
}

/// A command of the binary with the deployment's environment of `dir` (vault key, insurer
/// number; PostgreSQL's audit key) against `db`.
pub fn cli(db: &TestDb, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(&*BIN);
    if db.is_postgres() {
        command.env("KOKUHO_AUDIT_KEY_FILE", audit_key(dir));
    }
    command
        .args(args)
        .args(["--database-url", &db.url])
        .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        .output()
        .unwrap()
}

/// Tokens of the running servers by address: every request of [`http`] carries its server's.
static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// A token made by `token create` (the last line of its stdout).
pub fn create_token(db: &TestDb, dir: &std::path::Path, name: &str, roles: &[&str]) -> String {
    let mut command = Command::new(&*BIN);
    command.args(["token", "create", "--name", name, "--database-url", &db.url]);
    for r in roles {
        command.args(["--role", r]);
    }
    let out = command.env("KOKUHO_VAULT_KEY_FILE", vault_key(dir)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().to_owned()
}

pub fn start(db: &TestDb, dir: &std::path::Path) -> Server {
    start_with(db, dir, &[])
}

/// As [`start`], with more environment for the server (`RUST_LOG`, settings).
pub fn start_with(db: &TestDb, dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let server = start_bare_with(db, dir, env);
    let name = format!("cli-test-{}", uuid::Uuid::new_v4().simple());
    let token = create_token(db, dir, &name, &["clerk", "auditor", "feed_consumer"]);
    TOKENS.lock().unwrap().push((server.addr.clone(), token));
    server
}

pub fn token_of(addr: &str) -> Option<String> {
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .find(|(a, _)| a == addr)
        .map(|(_, t)| t.clone())
}

/// A server without a token of its own (requests of [`http`] carry none).
pub fn start_bare(db: &TestDb, dir: &std::path::Path) -> Server {
    start_bare_with(db, dir, &[])
}

fn start_bare_with(db: &TestDb, dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(&*BIN);
    if db.is_postgres() {
        command.env("KOKUHO_AUDIT_KEY_FILE", audit_key(dir));
    }
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url])
        .env("KOKUHO_VAULT_KEY_FILE", vault_key(dir))
        .env("KOKUHO_INSURER_NUMBER", "131999")
        // Load tests drive one token flat out; a test of the limit sets its own (below).
        .env("KOKUHO_RATE_LIMIT_PER_SECOND", super::GENEROUS_RATE.to_string())
        .env("KOKUHO_RATE_LIMIT_BURST", super::GENEROUS_RATE.to_string())
        .env("RUST_LOG", "info");
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(String::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            {
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if let Some(rest) = line.split("addr=").nth(1) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server announced its address");
    Server { child, addr, log }
}

/// A GET answered with text (`/metrics`): the status and the body as it came. A connection
/// reset before any answer (a full accept queue while thousands of clients connect at once)
/// is tried again: the GET changes nothing.
pub fn http_text(addr: &str, path: &str) -> (u16, String) {
    let auth = token_of(addr)
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut tries = 0;
    let raw = loop {
        let mut raw = String::new();
        let attempt = TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n"
            )?;
            s.read_to_string(&mut raw)
        });
        match attempt {
            Ok(_) => break raw,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && raw.is_empty() && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("GET {path}: {e}"),
        }
    };
    let status: u16 = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    http_with(addr, method, path, body, &[])
}

/// A request with extra headers; the status and the JSON body (Null when there is none).
pub fn http_with(addr: &str, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    // The server's token unless the request brings its own credential.
    let own = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
    let mut auth = token_of(addr)
        .filter(|_| !own)
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    for (k, v) in headers {
        auth.push_str(&format!("{k}: {v}\r\n"));
    }
    let answer = request(addr, method, path, body, &auth, Duration::from_secs(30)).unwrap();
    (answer.status, answer.body)
}

/// A response as [`request`] read it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The `X-Request-Id` the server answered with.
    pub request_id: Option<String>,
}

/// One request on a fresh connection; connection errors and a response not complete within
/// `timeout` are errors (the fault tests count them), and `headers` are raw header lines
/// (`Name: value\r\n`), the credential among them.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &str,
    timeout: Duration,
) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect_timeout(&addr.parse().expect("an address"), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let broken = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no complete HTTP response");
    let status: u16 = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(broken)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(broken)?;
    let request_id = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
        })
        .map(|(_, v)| v.trim().to_owned());
    // Small bodies may come chunked: take the JSON between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    Ok(Answer {
        status,
        body: json,
        request_id,
    })
}
