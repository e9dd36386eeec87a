//! The soak's clients: appenders, readers, feed consumers, and the one-off operations (an
//! export, `audit verify`), each counting every outcome in a shared [`Tally`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use serde_json::{json, Value};

/// Every outcome by kind of load: `"201"`, `"409 sequence_conflict"`, `"exit 0"`, `"transport"`.
#[derive(Default)]
pub struct Tally {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Feed records the consumers received (they advance their cursors by them).
    pub feed_records: AtomicU64,
}

impl Tally {
    pub fn count(&self, kind: &'static str, outcome: String) {
        *self.counts.lock().unwrap().entry((kind, outcome)).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<(&'static str, String), u64> {
        self.counts.lock().unwrap().clone()
    }
}

/// Whether `outcome` is what `kind` should get: success, or the refusal the driver provokes
/// on purpose for the kinds that exist to provoke one.
pub fn expected(kind: &str, outcome: &str) -> bool {
    match kind {
        "conflict" => outcome == "409 sequence_conflict",
        "refusal" => outcome == "422 person_not_registered",
        "verify" => outcome == "exit 0",
        _ => outcome.starts_with('2'),
    }
}

/// What the workers share: the server, its credentials, the tally, the stop flag, and the
/// persons registered so far (the readers' targets).
pub struct Shared {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
    pub tally: Tally,
    pub stop: AtomicBool,
    pub registered: Mutex<Vec<u64>>,
    pub pause: Duration,
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Sends a request, counts its outcome, and returns the status and body (the JSON of an
    /// error body is read for its code only; nothing of a body is logged).
    pub async fn send(&self, kind: &'static str, req: reqwest::RequestBuilder) -> Option<(u16, bytes::Bytes)> {
        let res = match req.bearer_auth(&self.token).send().await {
            Ok(res) => res,
            Err(_) => {
                self.tally.count(kind, "transport".into());
                return None;
            }
        };
        let status = res.status().as_u16();
        let Ok(body) = res.bytes().await else {
            self.tally.count(kind, format!("{status} body_interrupted"));
            return None;
        };
        let outcome = if status >= 400 {
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "no_code".into());
            format!("{status} {code}")
        } else {
            status.to_string()
        };
        self.tally.count(kind, outcome);
        Some((status, body))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The ten events of a generated person ([`crate::history`]), recorded one event at a time.
/// Households of three consecutive persons of one appender, so appenders never contend.
fn person_events(n: u64) -> Vec<Value> {
    crate::history::person_events(n as usize, &format!("{}", 200_000_000_000u64 + n / 3))
}

fn person_id(n: u64) -> String {
    format!("{}", 100_000_000_000u64 + n)
}

/// Appender `c`: its own persons, each registered and then given its nine other events; every
/// 20th person also draws a deliberate 409 (a stale If-Match) and a deliberate 422 (an event
/// for a person nobody registered).
pub async fn appender(s: Arc<Shared>, c: u64) {
    let mut k = 0u64;
    while s.running() {
        let n = c * 10_000_000 + k;
        let path = s.url(&format!("/v1/persons/{}/events", person_id(n)));
        for (j, event) in person_events(n).iter().enumerate() {
            if !s.running() {
                return;
            }
            let ok = s.send("append", s.client.post(&path).json(event)).await;
            if j == 0 && matches!(ok, Some((201, _))) {
                s.registered.lock().unwrap().push(n);
            }
            tokio::time::sleep(s.pause).await;
        }
        if k % 20 == 0 {
            let stale = s.client.post(&path).header("if-match", "\"1\"").json(&json!(
                {"type": "document_collected", "effective_date": "2020-01-01", "reported_date": "2020-01-01"}
            ));
            s.send("conflict", stale).await;
            // A range no appender uses.
            let nobody = s.url(&format!("/v1/persons/{}/events", 300_000_000_000u64 + n));
            let event = json!({"type": "document_collected", "effective_date": "2020-01-01"});
            s.send("refusal", s.client.post(nobody).json(&event)).await;
        }
        k += 1;
    }
}

/// A reader: a random registered person, then its timeline, then a search, in turn.
pub async fn reader(s: Arc<Shared>) {
    let mut turn = 0u64;
    while s.running() {
        let n = {
            let registered = s.registered.lock().unwrap();
            (!registered.is_empty()).then(|| registered[rand::thread_rng().gen_range(0..registered.len())])
        };
        let Some(n) = n else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let id = person_id(n);
        match turn % 3 {
            0 => {
                s.send("read_person", s.client.get(s.url(&format!("/v1/persons/{id}"))))
                    .await;
            }
            1 => {
                let path = s.url(&format!("/v1/persons/{id}/timeline"));
                s.send("read_timeline", s.client.get(path)).await;
            }
            _ => {
                let i = n as usize;
                let body = if turn % 2 == 0 {
                    json!({"name_kana": "ヤマダ"})
                } else {
                    json!({"birth_date": format!("19{:02}-0{}-1{}", 45 + i % 40, 1 + i % 9, i % 10)})
                };
                s.send("search", s.client.post(s.url("/v1/persons/search")).json(&body))
                    .await;
            }
        }
        turn += 1;
        tokio::time::sleep(s.pause).await;
    }
}

/// A feed consumer: long-polls from position 0 and follows `next_after`, as a downstream
/// system does.
pub async fn feed_consumer(s: Arc<Shared>) {
    let mut after = 0i64;
    while s.running() {
        let path = s.url(&format!("/v1/feed?after={after}&limit=1000&wait=5"));
        match s.send("feed", s.client.get(path)).await {
            Some((200, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let got = v["records"].as_array().map_or(0, |r| r.len());
                s.tally.feed_records.fetch_add(got as u64, Ordering::Relaxed);
                after = v["next_after"].as_i64().unwrap_or(after);
            }
            // Counted; a consumer retries after a pause, as a real one would.
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The export of the feed's first `limit` records, both files (role `exporter`).
pub async fn export(s: &Shared, token: &str, limit: u64) {
    for file in ["household", "individual"] {
        let path = s.url(&format!("/v1/exports/feed?after=0&file={file}&limit={limit}"));
        let res = s.client.get(path).bearer_auth(token).send().await;
        let outcome = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(_) => status.to_string(),
                    Err(_) => format!("{status} body_interrupted"),
                }
            }
            Err(_) => "transport".into(),
        };
        s.tally.count("export", outcome);
    }
}

/// `kokuho-ledger audit verify` against the serving database (its own process: the chain and
/// Merkle tree recomputed from the log while the server appends); counted by exit code.
pub async fn audit_verify(s: &Shared, mut command: std::process::Command) {
    let out = tokio::task::spawn_blocking(move || command.output()).await;
    let outcome = match out {
        Ok(Ok(o)) => format!("exit {}", o.status.code().unwrap_or(-1)),
        _ => "not_started".into(),
    };
    s.tally.count("verify", outcome);
}
