//! The relay's settings (`KOKUHO_NATS_*`), parsed once by `settings.rs`.

use std::time::Duration;

/// Where and how the change feed is published to NATS JetStream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// `KOKUHO_NATS_URL` (or `feed publish --nats-url`): the relay runs only when it is set.
    /// A comma-separated list names several servers of one cluster.
    pub url: Option<String>,
    /// `KOKUHO_NATS_STREAM`: the JetStream stream (created when missing, checked otherwise).
    pub stream: String,
    /// `KOKUHO_NATS_SUBJECT_PREFIX`: records go to `<prefix>.<insurer number>`; the stream
    /// this relay creates takes `<prefix>.>`, so several insurers can share it.
    pub subject_prefix: String,
    /// `KOKUHO_NATS_REPLICAS`: replicas of a stream the relay creates (1 on a single server,
    /// 3 on a production cluster).
    pub replicas: usize,
    /// `KOKUHO_NATS_DUPLICATE_WINDOW` (seconds): how long the server remembers message ids. A
    /// retry inside it is answered as a duplicate; after it, the expected-sequence header
    /// refuses the retry and the relay re-synchronises — so the window bounds memory, not
    /// correctness.
    pub duplicate_window: Duration,
    /// `KOKUHO_NATS_MY_NUMBER`: the stream is the intermediate-server channel and individual
    /// records carry `my_number` (as `GET /v1/feed` serves them to a `my_number` consumer).
    pub my_number: bool,
    /// Records read from the feed and published per access record.
    pub batch: i64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "KOKUHO_FEED".into(),
            subject_prefix: "kokuho.feed".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            my_number: false,
            batch: 1000,
        }
    }
}

impl RelayConfig {
    /// `<prefix>.<insurer number>`.
    pub fn subject(&self, insurer_number: &str) -> String {
        format!("{}.{insurer_number}", self.subject_prefix)
    }

    /// The stream's subjects when the relay creates it.
    pub fn stream_subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// A stream name is one token: no `.`, `*`, `>`, whitespace or path separators.
    pub fn check_stream_name(name: &str) -> Result<(), String> {
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(format!("{name:?} is not a stream name (one token, no . * > or spaces)"));
        }
        Ok(())
    }

    /// A prefix is one or more literal tokens (no wildcards).
    pub fn check_subject_prefix(prefix: &str) -> Result<(), String> {
        let bad = prefix.is_empty()
            || prefix
                .split('.')
                .any(|t| t.is_empty() || t == "*" || t == ">" || t.chars().any(char::is_whitespace));
        if bad {
            return Err(format!(
                "{prefix:?} is not a subject prefix (dot-separated literal tokens)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(RelayConfig::check_stream_name("KOKUHO_FEED").is_ok());
        assert!(RelayConfig::check_stream_name("a.b").is_err());
        assert!(RelayConfig::check_stream_name("").is_err());
        assert!(RelayConfig::check_subject_prefix("kokuho.feed").is_ok());
        assert!(RelayConfig::check_subject_prefix("kokuho.*").is_err());
        assert!(RelayConfig::check_subject_prefix("kokuho..feed").is_err());
        let c = RelayConfig::default();
        assert_eq!(c.subject("131999"), "kokuho.feed.131999");
        assert_eq!(c.stream_subjects(), "kokuho.feed.>");
    }
}
