//! A private NATS server with JetStream for one test (its own free port and store directory,
//! never the machine's shared server), and reading what a stream holds for a subject.
//!
//! The tests need the real `nats-server` binary: `NATS_SERVER`, else `nats-server` on PATH,
//! else `/usr/sbin/nats-server` (Debian's package `nats-server`). A missing binary fails the
//! test with that message; it is never skipped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream::Stream};
use futures::StreamExt as _;

/// The `nats-server` binary.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    assert!(
        debian.is_file(),
        "nats-server is required by the NATS relay tests and was not found (NATS_SERVER, PATH, /usr/sbin/nats-server): \
         install Debian's package `nats-server` (apt-get install nats-server)"
    );
    debian
}

/// A free TCP port on loopback (the listener is closed before the server binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free port with a fresh store directory, and waits until
    /// it accepts connections.
    pub fn start() -> Self {
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path().join("store"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary().display()));
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server did not listen on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: the server gets no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One stored message as a consumer sees it.
#[derive(Clone, Debug)]
pub struct Received {
    pub stream_sequence: u64,
    /// The `Kokuho-Feed-Position` header.
    pub position: Option<i64>,
    pub msg_id: Option<String>,
    pub body: Vec<u8>,
}

pub async fn connect(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .expect("connecting to the test's NATS server");
    jetstream::new(client)
}

/// Every message the stream holds for `subject` from `start` on, through an ephemeral pull
/// consumer (what a downstream system does), in stream order.
pub async fn read(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    start: consumer::DeliverPolicy,
) -> Vec<Received> {
    let stream: Stream = js.get_stream(stream).await.expect("the stream exists");
    let mut consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.to_owned(),
            deliver_policy: start,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.info().await.unwrap().num_pending as usize;
    read_from(&mut consumer, pending, false).await
}

/// `n` messages of a consumer, acknowledging each when `ack` (a durable consumer's progress).
/// Pulls exactly what it reads, so a durable consumer has nothing outstanding afterwards.
pub async fn read_from(consumer: &mut consumer::PullConsumer, n: usize, ack: bool) -> Vec<Received> {
    let mut out = Vec::with_capacity(n);
    let started = Instant::now();
    while out.len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the consumer delivered {} of {n} messages",
            out.len()
        );
        let mut batch = consumer
            .batch()
            .max_messages((n - out.len()).min(1000))
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            if ack {
                m.double_ack().await.unwrap();
            }
            let info = m.info().unwrap();
            let headers = m.headers.clone().unwrap_or_default();
            out.push(Received {
                stream_sequence: info.stream_sequence,
                position: headers
                    .get("Kokuho-Feed-Position")
                    .and_then(|v| v.as_str().parse().ok()),
                msg_id: headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()),
                body: m.payload.to_vec(),
            });
        }
    }
    out
}

/// How many messages the stream holds (all subjects).
pub async fn stored(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}
