//! kokuho-ledger: an event-sourced eligibility history ledger for a municipality's National
//! Health Insurance (国民健康保険).

pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod domain;
pub mod feed_export;
pub mod http;
pub mod import;
pub mod ledger;
pub mod metrics;
#[path = "../projections/mod.rs"]
pub mod projections;
pub mod settings;
pub mod store;
pub mod stream_locks;
pub mod vault;
