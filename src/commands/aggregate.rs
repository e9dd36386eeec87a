//! Running a command through a cqrs-es aggregate and serialising what it emits for the log.

use chrono::NaiveDate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

use crate::codec::{new_event, Origin};
use crate::domain::CommandError;
use crate::error::LedgerError;
use crate::store::NewEvent;

/// Runs a command through an aggregate (applying what it emits) and serialises the events for
/// the log; the inner error is the aggregate's refusal.
pub(crate) async fn decide<A>(
    aggregate: &mut A,
    command: A::Command,
    services: &A::Services,
    origin: Origin<'_>,
    reported: NaiveDate,
) -> Result<Result<Vec<NewEvent>, CommandError>, LedgerError>
where
    A: Aggregate<Error = CommandError>,
{
    let sink = EventSink::default();
    if let Err(e) = aggregate.handle(command, services, &sink).await {
        return Ok(Err(e));
    }
    let events = sink.collect().await;
    Ok(events
        .iter()
        .map(|e| new_event(e, origin, reported))
        .collect::<Result<Vec<_>, _>>()
        .map(Ok)?)
}
