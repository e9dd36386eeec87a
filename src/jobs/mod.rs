//! Work the ledger does on its own account, on a schedule.

pub mod age_out;
