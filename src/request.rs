//! What every command and query carries from the door (HTTP, console, command line): who
//! asked, from where, and how the request is to be treated.

/// Who asked, for the event metadata and the access record (ids only, never personal data).
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The principal: a staff id, a token's name, `system` for the ledger's own work.
    pub actor: String,
    /// 端末名: the client's address, or a terminal id from a trusted proxy.
    pub terminal: Option<String>,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request (path and body) the key guards.
    pub fingerprint: Option<String>,
    /// `If-Match`: the stream's last sequence the client saw.
    pub if_match: Option<i64>,
    /// A write's access record as its door began it (the persons the request names set): the
    /// ledger completes it and commits it with the events where the store can.
    pub access: Option<crate::access::AccessRecord>,
}

impl RequestContext {
    /// The ledger's own work (jobs), under a request id naming it.
    pub fn system(request_id: impl Into<String>) -> Self {
        Self {
            actor: "system".into(),
            request_id: request_id.into(),
            ..Default::default()
        }
    }
}
