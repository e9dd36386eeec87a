//! kokuho-ledger: an event-sourced eligibility history ledger for a municipality's National
//! Health Insurance (国民健康保険).

pub mod domain;
