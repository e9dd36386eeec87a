//! kokuho-ledger: an event-sourced eligibility history ledger for a municipality's National
//! Health Insurance (国民健康保険).

pub mod access;
pub mod app;
pub mod audit;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod commands;
pub mod console;
pub mod domain;
pub mod error;
pub mod exports;
pub mod feed;
pub mod http;
pub mod import;
pub mod jobs;
pub mod ledger;
pub mod metrics;
pub mod projections;
pub mod reads;
pub mod request;
pub mod settings;
pub mod store;
pub mod vault;
