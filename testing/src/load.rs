//! Load from outside the process, as the fault tests need it: writers that register persons
//! and record one more event for each, every request with its own Idempotency-Key, retried
//! with the same key on connection errors and 503s until answered; readers of timelines. Each
//! client follows the server to its new address after a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::process::{request, Answer};

/// How long a client waits for one answer before it counts the request as hung.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Something the load saw: a request that was answered, or not.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub write: bool,
    pub took: Duration,
    /// None: no answer (connection refused or reset, or the timeout).
    pub status: Option<u16>,
    pub code: Option<String>,
    pub request_id: Option<String>,
}

/// An acknowledged write: the person, the event's position and sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Acked {
    pub person: String,
    pub position: i64,
    pub sequence: i64,
}

#[derive(Clone)]
pub struct Load {
    addr: Arc<RwLock<String>>,
    auth: String,
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<Acked>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Load {
    pub fn new(addr: &str, token: &str) -> Self {
        Self {
            addr: Arc::new(RwLock::new(addr.to_owned())),
            auth: format!("Authorization: Bearer {token}\r\n"),
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// The server moved (a restart on a new port).
    pub fn follow(&self, addr: &str) {
        *self.addr.write().unwrap() = addr.to_owned();
    }

    /// Starts `writers` writer threads and `readers` reader threads; [`Load::finish`] stops
    /// them after each writer's request in flight is answered.
    pub fn start(&self, writers: usize, readers: usize) -> Vec<std::thread::JoinHandle<()>> {
        let mut threads = Vec::new();
        for w in 0..writers {
            let load = self.clone();
            threads.push(std::thread::spawn(move || load.write(w)));
        }
        for _ in 0..readers {
            let load = self.clone();
            threads.push(std::thread::spawn(move || load.read()));
        }
        threads
    }

    pub fn finish(&self, threads: Vec<std::thread::JoinHandle<()>>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
    }

    fn send(&self, write: bool, method: &str, path: &str, body: &str, extra: &str) -> Option<Answer> {
        let addr = self.addr.read().unwrap().clone();
        let started = Instant::now();
        let answer = request(
            &addr,
            method,
            path,
            body,
            &format!("{}{extra}", self.auth),
            CLIENT_TIMEOUT,
        )
        .ok();
        self.seen.lock().unwrap().push(Seen {
            at: started,
            write,
            took: started.elapsed(),
            status: answer.as_ref().map(|a| a.status),
            code: answer
                .as_ref()
                .and_then(|a| a.body["error"]["code"].as_str().map(str::to_owned)),
            request_id: answer.as_ref().and_then(|a| a.request_id.clone()),
        });
        answer
    }

    /// Posts until answered with something other than a 503 (the same key every time): the
    /// answer, or None when the load stopped first.
    fn post_until_answered(&self, path: &str, body: &Value) -> Option<Answer> {
        let key = format!("Idempotency-Key: {}\r\n", uuid::Uuid::new_v4().simple());
        let body = body.to_string();
        loop {
            match self.send(true, "POST", path, &body, &key) {
                Some(a) if a.status != 503 => return Some(a),
                // Retried even after the stop: an unanswered request must end answered.
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn write(&self, writer: usize) {
        let mut i = 0;
        while !self.stop.load(Ordering::SeqCst) {
            i += 1;
            let person = format!("{}{:06}", writer + 1, i);
            let events = [
                json!({"type": "registered", "effective_date": "2020-01-01", "name": "試験 花子",
                    "name_kana": "シケン　ハナコ", "birth_date": "1985-03-03", "sex": "2"}),
                json!({"type": "welfare_started", "effective_date": "2025-06-01"}),
            ];
            for event in events {
                let Some(a) = self.post_until_answered(&format!("/v1/persons/{person}/events"), &event) else {
                    return;
                };
                if a.status != 201 {
                    // Recorded in `seen`; the test fails on it.
                    return;
                }
                self.acked.lock().unwrap().push(Acked {
                    person: person.clone(),
                    position: a.body["position"].as_i64().unwrap_or(-1),
                    sequence: a.body["sequence"].as_i64().unwrap_or(-1),
                });
            }
        }
    }

    fn read(&self) {
        while !self.stop.load(Ordering::SeqCst) {
            let person = {
                let acked = self.acked.lock().unwrap();
                acked.get(acked.len() / 2).map(|a| (a.person.clone(), a.position))
            };
            match person {
                Some((p, at)) => {
                    self.send(
                        false,
                        "GET",
                        &format!("/v1/persons/{p}/timeline?min_position={at}"),
                        "",
                        "",
                    );
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }
}
