//! An HTTP client of the router (tower oneshot) for the tests.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{ledger, Kind, TestLedger};

pub struct Api {
    pub t: TestLedger,
    pub router: Router,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Api {
    pub async fn new(kind: Kind) -> Self {
        Self::with(ledger(kind).await)
    }

    pub fn with(t: TestLedger) -> Self {
        let router = kokuho_ledger::http::router(t.ledger.clone());
        Self { t, router }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply { status, headers, body }
    }

    pub async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::post(path).header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::from(body.to_owned())).unwrap()).await
    }

    /// A GET with no headers: reads are consistent by default, so it sees every write
    /// answered before it.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap()).await
    }

    /// A GET of an endpoint that is not a read model (operations, the feed).
    pub async fn get_now(&self, path: &str) -> Reply {
        self.get(path).await
    }

    /// A GET with headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    pub async fn head(&self) -> i64 {
        self.t.store.head().await.unwrap()
    }

    pub async fn register(&self, id: &str, birth: &str) -> Reply {
        let body = json!({"type": "registered", "effective_date": "2020-01-01", "name": "山田 太郎",
            "name_kana": "ヤマダ　タロウ", "birth_date": birth, "sex": "1", "my_number": "123456789018"});
        self.post(&format!("/v1/persons/{id}/events"), &body.to_string(), &[])
            .await
    }

    pub async fn household(&self, id: &str, body: Value) -> Reply {
        self.post(&format!("/v1/households/{id}/events"), &body.to_string(), &[])
            .await
    }

    pub async fn event(&self, id: &str, body: Value) -> Reply {
        self.post(&format!("/v1/persons/{id}/events"), &body.to_string(), &[])
            .await
    }
}

pub fn code(r: &Reply) -> &str {
    r.body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error body: {} {}", r.status, r.body))
}
