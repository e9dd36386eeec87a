//! The 75th-birthday job (feed.md "Date-driven changes"): records `late_elderly_age_reached`
//! (actor `system`) for every person whose loss on their 75th birthday is due by a day, as the
//! corrected history says. It runs daily in `serve` and as `kokuho-ledger age-out`.
//!
//! Idempotent: a person is recorded once, whatever runs concurrently or is repeated (an
//! Idempotency-Key per person and birthday, and the aggregate's own rule). One person's
//! refusal never stops the others: it is reported with the person's id, and the run goes on.

use std::time::Duration;

use chrono::NaiveDate;

use crate::commands::Command;
use crate::domain::input::PersonInput;
use crate::domain::{age, DomainError, PersonId};
use crate::error::LedgerError;
use crate::ledger::Ledger;
use crate::reads::Read;
use crate::request::RequestContext;
use crate::store::sql::{Ty, Val};

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AgeOutSummary {
    pub recorded: usize,
    /// The persons recorded by this run (for the command line's access record).
    pub recorded_persons: Vec<String>,
    /// Recorded before (by an earlier or concurrent run).
    pub already: usize,
    /// Persons whose confirmation was refused, with why (ids only).
    pub failed: Vec<(String, String)>,
}

/// Persons whose current ward period ends by age on their 75th birthday, on or before
/// `through`, without a confirmation for that day: exactly the persons the job must record.
async fn candidates(ledger: &Ledger, through: NaiveDate) -> Result<Vec<(String, NaiveDate)>, LedgerError> {
    let rows = ledger
        .store()
        .db()
        .fetch(
            "SELECT r.person_id, r.to_date FROM proj_run r \
             JOIN proj_person p ON p.person_id = r.person_id AND p.known_to IS NULL \
             WHERE r.known_to IS NULL AND r.loss_by_age AND r.to_date <= $1 \
               AND (p.age_reached_on IS NULL OR p.age_reached_on <> r.to_date) \
             ORDER BY r.person_id",
            &[Val::text(through.to_string())],
            &[Ty::Text, Ty::Text],
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            let id = r[0].as_text().unwrap_or_default().to_owned();
            let day = r[1]
                .as_text()
                .unwrap_or_default()
                .parse::<NaiveDate>()
                .map_err(|e| crate::store::corrupt(format!("proj_run.to_date: {e}")))?;
            Ok((id, day))
        })
        .collect()
}

/// Records the confirmations due on or before `through` (never after today).
pub async fn run(ledger: &Ledger, through: NaiveDate) -> Result<AgeOutSummary, LedgerError> {
    let today = ledger.clock().today();
    if through > today {
        return Err(LedgerError::Rule(DomainError::new(
            "future_date",
            format!("age-out through {through} is after today ({today})"),
        )));
    }
    // The read models as of now: every event committed before the run counts.
    ledger.reads.position(&Read::default()).await?;
    let mut summary = AgeOutSummary::default();
    for (id, birthday) in candidates(ledger, through).await? {
        let person_id = PersonId::parse(&id).map_err(|e| crate::store::corrupt(format!("stored person id: {e}")))?;
        let key = format!("age-out:{person_id}:{birthday}");
        let ctx = RequestContext {
            fingerprint: Some(key.clone()),
            idempotency_key: Some(key),
            ..RequestContext::system(format!("age-out:{through}"))
        };
        let command = Command::Person {
            person_id,
            input: PersonInput {
                event: age::reached(birthday),
                my_number: None,
                replacement_reported_date_missing: false,
            },
        };
        match ledger.commands.execute_system(&command, &ctx).await {
            Ok(r) if r.replayed => summary.already += 1,
            Ok(_) => {
                summary.recorded += 1;
                summary.recorded_persons.push(id.clone());
            }
            Err(LedgerError::Rule(e)) if e.code == "age_reached_already_recorded" => summary.already += 1,
            Err(
                e @ (LedgerError::Rule(_)
                | LedgerError::Input(_)
                | LedgerError::Conflict { .. }
                | LedgerError::ConflictPersisted),
            ) => {
                tracing::error!(person_id = %id, error = %e, "age-out: the confirmation was refused");
                summary.failed.push((id, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!(%through, recorded = summary.recorded, already = summary.already, failed = summary.failed.len(), "age-out done");
    Ok(summary)
}

/// The daily run of `serve`: at start (catching up), then shortly after each midnight in Tokyo;
/// after a storage failure again after 5 s, doubling up to 10 minutes, so that a database
/// outage delays the run by seconds, not until the next night.
pub async fn daily(ledger: std::sync::Arc<Ledger>) {
    const FIRST_RETRY: Duration = Duration::from_secs(5);
    let mut retry = FIRST_RETRY;
    loop {
        let today = ledger.clock().today();
        let wait = match run(&ledger, today).await {
            Ok(_) => {
                retry = FIRST_RETRY;
                let now = ledger.clock().now();
                let next = (today + chrono::Days::new(1))
                    .and_hms_opt(0, 5, 0)
                    .expect("valid time")
                    .and_local_timezone(crate::clock::tokyo())
                    .single()
                    .expect("a fixed offset has one local time");
                (next.with_timezone(&chrono::Utc) - now)
                    .to_std()
                    .unwrap_or(Duration::from_secs(60))
            }
            Err(e) => {
                tracing::error!(error = %e, retry_seconds = retry.as_secs(), "age-out failed; retrying");
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(600));
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
