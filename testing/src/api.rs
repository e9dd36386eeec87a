//! An HTTP client of the router (tower oneshot) for the tests. Every request carries a bearer
//! token of a principal with the roles of [`Api::ROLES`] (clerk, auditor, feed consumer,
//! exporter) unless it brings its own `Authorization`; the peer address is 127.0.0.1.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kokuho_ledger::access::Role;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{ledger, test_now, Kind, TestLedger};

pub struct Api {
    pub t: TestLedger,
    pub router: Router,
    /// The default principal's token and name (another `Api` on the same database gets a
    /// name of its own).
    pub token: String,
    pub name: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

/// The test peer: the terminal of every access record made through [`Api`].
pub fn peer() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

impl Api {
    /// The default principal's name and roles.
    pub const NAME: &'static str = "test-clerk";
    pub const ROLES: [Role; 4] = [Role::Clerk, Role::Auditor, Role::FeedConsumer, Role::Exporter];

    pub async fn new(kind: Kind) -> Self {
        Self::with(ledger(kind).await).await
    }

    pub async fn with(t: TestLedger) -> Self {
        let router = kokuho_ledger::http::router(t.ledger.clone(), t.access.clone()).layer(MockConnectInfo(peer()));
        let mut name = Self::NAME.to_owned();
        let token = match t
            .access
            .tokens
            .create(&name, &Self::ROLES, None, "test", test_now())
            .await
        {
            Ok(token) => token,
            Err(_) => {
                name = format!("{}-{}", Self::NAME, uuid::Uuid::new_v4().simple());
                create_token(&t, &name, &Self::ROLES).await
            }
        };
        Self { t, router, token, name }
    }

    /// A token for another principal.
    pub async fn token(&self, name: &str, roles: &[Role]) -> String {
        create_token(&self.t, name, roles).await
    }

    pub async fn send(&self, mut req: Request<Body>) -> Reply {
        if !req.headers().contains_key("authorization") {
            req.headers_mut()
                .insert("authorization", format!("Bearer {}", self.token).parse().unwrap());
        }
        self.send_raw(req).await
    }

    /// Sends the request as it is (no credential added).
    pub async fn send_raw(&self, req: Request<Body>) -> Reply {
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

    /// A GET as the principal of `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        self.get_with(path, &[("authorization", &format!("Bearer {token}"))])
            .await
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

    /// The access records, oldest first.
    pub async fn access_records(&self) -> Vec<kokuho_ledger::access::AccessRecord> {
        let filter = kokuho_ledger::access::log::Filter {
            limit: 1_000_000,
            ..Default::default()
        };
        kokuho_ledger::access::log::list(self.t.store.db(), &filter)
            .await
            .unwrap()
    }
}

async fn create_token(t: &TestLedger, name: &str, roles: &[Role]) -> String {
    t.access
        .tokens
        .create(name, roles, None, "test", test_now())
        .await
        .unwrap()
}

pub fn code(r: &Reply) -> &str {
    r.body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error body: {} {}", r.status, r.body))
}
