//! The unusual-access report (異常アクセスの確認): accesses outside business hours, on weekends,
//! Japanese public holidays (the `yasumi` crate's calendar, substitute and citizens' holidays
//! included) and the year-end closing days (12/29–1/3), and actors who touched more distinct
//! persons within one hour than the threshold.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc, Weekday};
use serde::Serialize;

use super::AccessError;
use crate::clock::tokyo;

/// Business hours (Asia/Tokyo, Monday–Friday) and the bulk-access threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnusualRules {
    pub opens: NaiveTime,
    pub closes: NaiveTime,
    /// More distinct persons than this within one hour is bulk access.
    pub bulk_threshold: usize,
}

impl Default for UnusualRules {
    fn default() -> Self {
        Self {
            opens: NaiveTime::from_hms_opt(8, 30, 0).expect("valid"),
            closes: NaiveTime::from_hms_opt(17, 15, 0).expect("valid"),
            bulk_threshold: 100,
        }
    }
}

impl UnusualRules {
    /// `HH:MM-HH:MM`, opening before closing.
    pub fn parse_hours(&mut self, text: &str) -> Result<(), AccessError> {
        let bad = || {
            AccessError::Invalid(format!(
                "business hours {text:?}: expected HH:MM-HH:MM, e.g. 08:30-17:15"
            ))
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let opens = NaiveTime::parse_from_str(a.trim(), "%H:%M").map_err(|_| bad())?;
        let closes = NaiveTime::parse_from_str(b.trim(), "%H:%M").map_err(|_| bad())?;
        if opens >= closes {
            return Err(bad());
        }
        self.opens = opens;
        self.closes = closes;
        Ok(())
    }

    pub fn hours_text(&self) -> String {
        format!("{}-{}", self.opens.format("%H:%M"), self.closes.format("%H:%M"))
    }

    /// Why an access at this instant is unusual (empty: it is not).
    pub fn reasons(&self, at: DateTime<Utc>) -> Vec<Reason> {
        let local = at.with_timezone(&tokyo());
        let date = local.date_naive();
        let mut reasons = Vec::new();
        if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
            reasons.push(Reason::new("weekend", None));
        }
        if let Some(name) = yasumi::holiday_name(date) {
            reasons.push(Reason::new("public_holiday", Some(name)));
        }
        if matches!((date.month(), date.day()), (12, 29..=31) | (1, 1..=3)) {
            reasons.push(Reason::new("year_end_closing", None));
        }
        let time = NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second()).expect("valid");
        if time < self.opens || time >= self.closes {
            reasons.push(Reason::new("outside_business_hours", None));
        }
        reasons
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: &'static str,
    /// The holiday's name, for `public_holiday`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holiday: Option<String>,
}

impl Reason {
    fn new(code: &'static str, holiday: Option<String>) -> Self {
        Self { code, holiday }
    }
}

/// An actor who touched more distinct persons within one hour than the threshold; windows
/// that overlap are reported once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BulkAccess {
    pub actor: String,
    /// The first and last access of the busiest stretch.
    pub from: String,
    pub to: String,
    /// The most distinct persons seen within one hour in it.
    pub persons: usize,
}

/// Finds bulk access in `(actor, at, person)` accesses (any order).
pub fn bulk(accesses: &[(String, DateTime<Utc>, String)], threshold: usize) -> Vec<BulkAccess> {
    let mut by_actor: BTreeMap<&str, Vec<(DateTime<Utc>, &str)>> = BTreeMap::new();
    for (actor, at, person) in accesses {
        by_actor.entry(actor).or_default().push((*at, person));
    }
    let hour = chrono::Duration::hours(1);
    let mut found = Vec::new();
    for (actor, mut list) in by_actor {
        list.sort();
        let mut window: VecDeque<(DateTime<Utc>, &str)> = VecDeque::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut current: Option<BulkAccess> = None;
        for (at, person) in list {
            window.push_back((at, person));
            *counts.entry(person).or_default() += 1;
            while let Some(&(first, p)) = window.front() {
                if at - first < hour {
                    break;
                }
                window.pop_front();
                if let Some(c) = counts.get_mut(p) {
                    *c -= 1;
                    if *c == 0 {
                        counts.remove(p);
                    }
                }
            }
            if counts.len() > threshold {
                let start = window.front().map(|w| w.0).unwrap_or(at);
                match &mut current {
                    Some(b) => {
                        b.to = crate::store::format_instant(&at);
                        b.persons = b.persons.max(counts.len());
                    }
                    None => {
                        current = Some(BulkAccess {
                            actor: actor.to_owned(),
                            from: crate::store::format_instant(&start),
                            to: crate::store::format_instant(&at),
                            persons: counts.len(),
                        })
                    }
                }
            } else if let Some(b) = current.take() {
                found.push(b);
            }
        }
        found.extend(current);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn codes(rules: &UnusualRules, s: &str) -> Vec<&'static str> {
        rules.reasons(at(s)).into_iter().map(|r| r.code).collect()
    }

    #[test]
    fn business_hours_in_tokyo() {
        let r = UnusualRules::default();
        // Wednesday 2026-12-02, 10:00 JST.
        assert!(codes(&r, "2026-12-02T10:00:00+09:00").is_empty());
        assert_eq!(codes(&r, "2026-12-02T22:00:00+09:00"), ["outside_business_hours"]);
        assert_eq!(codes(&r, "2026-12-02T08:29:59+09:00"), ["outside_business_hours"]);
        assert!(codes(&r, "2026-12-02T08:30:00+09:00").is_empty());
        assert_eq!(codes(&r, "2026-12-02T17:15:00+09:00"), ["outside_business_hours"]);
        // 23:00 UTC on Tuesday is 08:00 on Wednesday in Tokyo.
        assert_eq!(codes(&r, "2026-12-01T23:00:00Z"), ["outside_business_hours"]);
        assert_eq!(codes(&r, "2026-12-06T11:00:00+09:00"), ["weekend"]);
    }

    #[test]
    fn holidays_and_year_end() {
        let r = UnusualRules::default();
        let h = r.reasons(at("2026-11-23T10:00:00+09:00"));
        assert_eq!(h[0].code, "public_holiday");
        assert_eq!(h[0].holiday.as_deref(), Some("勤労感謝の日"));
        // 国民の休日 and the 2021 Olympic moves come from the crate, not a list typed here.
        assert_eq!(codes(&r, "2026-09-22T10:00:00+09:00"), ["public_holiday"]);
        assert_eq!(codes(&r, "2021-07-23T10:00:00+09:00"), ["public_holiday"]);
        assert!(codes(&r, "2021-10-11T10:00:00+09:00").is_empty());
        assert_eq!(codes(&r, "2026-12-29T10:00:00+09:00"), ["year_end_closing"]);
        assert_eq!(
            codes(&r, "2027-01-01T10:00:00+09:00"),
            ["public_holiday", "year_end_closing"]
        );
        assert!(codes(&r, "2027-01-04T10:00:00+09:00").is_empty());
    }

    #[test]
    fn hours_parse() {
        let mut r = UnusualRules::default();
        r.parse_hours("09:00-18:00").unwrap();
        assert_eq!(r.hours_text(), "09:00-18:00");
        for bad in ["9-18", "18:00-09:00", "09:00", "x"] {
            assert!(r.parse_hours(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bulk_is_distinct_persons_within_an_hour() {
        let base = at("2026-12-02T01:00:00Z");
        let mut accesses = Vec::new();
        // 5 persons in 50 minutes, the same person many times, another actor at a slow pace.
        for i in 0..5 {
            accesses.push(("a".to_owned(), base + chrono::Duration::minutes(10 * i), format!("{i}")));
        }
        for i in 0..50 {
            accesses.push(("b".to_owned(), base + chrono::Duration::minutes(i), "7".to_owned()));
        }
        for i in 0..6 {
            accesses.push(("c".to_owned(), base + chrono::Duration::minutes(61 * i), format!("{i}")));
        }
        let found = bulk(&accesses, 4);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].actor, "a");
        assert_eq!(found[0].persons, 5);
        assert!(bulk(&accesses, 5).is_empty());
    }
}
