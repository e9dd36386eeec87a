//! kokuho-ledger: an event-sourced eligibility history ledger for a municipality's National
//! Health Insurance (国民健康保険).

pub mod domain;
pub mod metrics;
pub mod store;
pub mod clock;
pub mod settings;
pub mod vault;
pub mod ledger;
pub mod http;
pub mod app;
pub mod cli;
pub mod import;
pub mod stream_locks;
