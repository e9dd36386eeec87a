//! The JetStream stream the feed is published to: created when missing, checked when present.
//! Kept to what NATS 2.9 supports (no 2.10 fields such as compression or metadata).

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType, Stream};
use async_nats::jetstream::{self, ErrorCode};

use super::{RelayConfig, RelayError};

/// The configuration the relay creates: every message kept for good (limits retention with
/// no limits, unlimited messages per subject), on disk, protected from deleting and purging
/// single messages (a consumer resumes by position and must find every one).
pub fn wanted(config: &RelayConfig) -> Config {
    Config {
        name: config.stream.clone(),
        description: Some("kokuho-ledger change feed (被保険者異動情報), one subject per insurer number".into()),
        subjects: vec![config.stream_subjects()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: config.replicas,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        discard: DiscardPolicy::Old,
        duplicate_window: config.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        // Consumers may read the last record per subject from any replica (2.9 has direct get).
        allow_direct: true,
        ..Default::default()
    }
}

/// The stream, created with [`wanted`] if it does not exist; an existing one is checked for
/// what would lose, reorder or expire records, and must take the subject.
pub async fn ensure(js: &jetstream::Context, config: &RelayConfig, subject: &str) -> Result<Stream, RelayError> {
    let stream = match js.get_stream(&config.stream).await {
        Ok(stream) => stream,
        Err(e) if is_not_found(&e) => match js.create_stream(wanted(config)).await {
            Ok(stream) => {
                tracing::info!(stream = %config.stream, replicas = config.replicas, "created the feed stream");
                stream
            }
            // Another relay created it meanwhile: check that one.
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) => {
                js.get_stream(&config.stream).await.map_err(RelayError::nats)?
            }
            Err(e) => return Err(RelayError::nats(format!("creating stream {}: {e}", config.stream))),
        },
        Err(e) => return Err(RelayError::nats(format!("looking up stream {}: {e}", config.stream))),
    };
    check(&stream.cached_info().config, config, subject)?;
    Ok(stream)
}

fn is_not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Refuses a stream that would drop or reorder the feed; warns about differences that only
/// concern capacity.
pub fn check(found: &Config, config: &RelayConfig, subject: &str) -> Result<(), RelayError> {
    let refuse = |reason: String| RelayError::StreamConfig {
        stream: config.stream.clone(),
        reason,
    };
    if !found.subjects.iter().any(|s| subject_matches(s, subject)) {
        return Err(refuse(format!(
            "its subjects {:?} do not take {subject}: configure KOKUHO_NATS_STREAM / KOKUHO_NATS_SUBJECT_PREFIX to match",
            found.subjects
        )));
    }
    if found.retention != RetentionPolicy::Limits {
        return Err(refuse(format!(
            "retention {:?} removes consumed messages; the feed stream must keep them (limits retention)",
            found.retention
        )));
    }
    if found.max_messages_per_subject > 0 {
        return Err(refuse(format!(
            "max_msgs_per_subject {} would drop old records of the subject; it must be unlimited (-1)",
            found.max_messages_per_subject
        )));
    }
    if found.storage != StorageType::File {
        return Err(refuse(
            "memory storage loses the feed on a restart; it must be file storage".into(),
        ));
    }
    if found.sealed {
        return Err(refuse("the stream is sealed".into()));
    }
    if found.max_messages > 0 || found.max_bytes > 0 || !found.max_age.is_zero() {
        tracing::warn!(stream = %config.stream, max_msgs = found.max_messages, max_bytes = found.max_bytes,
            max_age_s = found.max_age.as_secs(), "the feed stream has limits: old records will expire and consumers replaying from the start will miss them");
    }
    if found.num_replicas != config.replicas {
        tracing::warn!(stream = %config.stream, found = found.num_replicas, configured = config.replicas,
            "the feed stream's replicas differ from KOKUHO_NATS_REPLICAS (the existing stream is kept as it is)");
    }
    Ok(())
}

/// NATS subject matching: `*` takes one token, `>` the rest (one or more).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_as_nats_does() {
        assert!(subject_matches("kokuho.feed.>", "kokuho.feed.131999"));
        assert!(subject_matches("kokuho.*.131999", "kokuho.feed.131999"));
        assert!(subject_matches("kokuho.feed.131999", "kokuho.feed.131999"));
        assert!(!subject_matches("kokuho.feed", "kokuho.feed.131999"));
        assert!(!subject_matches("kokuho.feed.>", "kokuho.feed"));
        assert!(!subject_matches("other.>", "kokuho.feed.131999"));
    }

    #[test]
    fn a_stream_that_could_lose_records_is_refused() {
        let config = RelayConfig::default();
        let subject = config.subject("131999");
        assert!(check(&wanted(&config), &config, &subject).is_ok());
        let mut capped = wanted(&config);
        capped.max_messages_per_subject = 1;
        assert!(check(&capped, &config, &subject).is_err());
        let mut work_queue = wanted(&config);
        work_queue.retention = RetentionPolicy::WorkQueue;
        assert!(check(&work_queue, &config, &subject).is_err());
        let mut memory = wanted(&config);
        memory.storage = StorageType::Memory;
        assert!(check(&memory, &config, &subject).is_err());
        let mut elsewhere = wanted(&config);
        elsewhere.subjects = vec!["other.>".into()];
        assert!(check(&elsewhere, &config, &subject).is_err());
    }
}
