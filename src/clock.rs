//! Time: instants are UTC; "today" is the Asia/Tokyo date (Japan keeps no daylight saving, so a
//! fixed +09:00 offset is exact).

use std::sync::Mutex;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

pub fn tokyo() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("valid offset")
}

pub fn tokyo_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&tokyo()).date_naive()
}

/// The instant a Tokyo calendar day begins.
pub fn tokyo_midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_local_timezone(tokyo())
        .single()
        .expect("a fixed offset has one local time")
        .with_timezone(&Utc)
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    fn today(&self) -> NaiveDate {
        tokyo_date(self.now())
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until moved (tests, replays).
pub struct FixedClock(Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn new(t: DateTime<Utc>) -> Self {
        Self(Mutex::new(t))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = t;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokyo_date_turns_at_15_utc() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T14:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(tokyo_date(t), NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
        let t = DateTime::parse_from_rfc3339("2026-11-24T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(tokyo_date(t), NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
    }
}
