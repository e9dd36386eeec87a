//! The eligibility timeline as a chart (console.md): insured intervals as bars on a year axis
//! with the reasons at their ends, the known future loss drawn distinctly, every event as a
//! marker at its effective date (corrected and rescinded ones struck through and linked to the
//! event that corrected them, late reports flagged). This computes the geometry; the template
//! draws it as inline SVG, escaping every text.

use chrono::{Datelike, NaiveDate};
use serde_json::Value;

use super::labels;
use crate::domain::person::EventStatus;
use crate::reads::views::TimelineView;

pub const WIDTH: f64 = 960.0;
const LEFT: f64 = 16.0;
const RIGHT: f64 = 16.0;
const BAR_Y: f64 = 34.0;
const BAR_H: f64 = 22.0;
const MARKER_Y: f64 = 86.0;
const LANE: f64 = 14.0;
const MAX_LANES: usize = 6;

/// A year line of the axis.
#[derive(Debug, Clone)]
pub struct Tick {
    pub x: String,
    pub label: String,
}

/// One insured interval.
#[derive(Debug, Clone)]
pub struct Bar {
    /// `YYYY-MM-DD`.
    pub from: String,
    /// `YYYY-MM-DD`, empty while open.
    pub to: String,
    pub x: String,
    /// Width of the part up to today (or the whole bar when it ended).
    pub w: String,
    /// The part after today of a loss already known (a pre-filed move-out): x and width.
    pub future: Option<(String, String)>,
    pub start_label: String,
    pub end_label: String,
    pub end_x: String,
    pub title: String,
}

/// A derived loss still to come for an open interval (the 75th birthday).
#[derive(Debug, Clone)]
pub struct FutureLoss {
    pub on: String,
    pub x: String,
    pub w: String,
    pub label: String,
}

/// One event.
#[derive(Debug, Clone)]
pub struct Marker {
    pub sequence: i64,
    /// `in_force` / `corrected` / `rescinded`.
    pub status: &'static str,
    pub x: String,
    pub y: String,
    pub label: &'static str,
    pub title: String,
    pub late: bool,
    /// The event that corrected or rescinded this one.
    pub corrected_by: Option<i64>,
    pub struck: bool,
    /// Where the marker links: the correcting event's row, else its own.
    pub href: String,
    /// The strike-through line's ends and the late flag's baseline.
    pub x1: String,
    pub x2: String,
    pub flag_y: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub width: String,
    pub height: String,
    pub axis_y: String,
    pub tick_top: String,
    pub today_x: String,
    pub today: String,
    pub bar_y: String,
    pub bar_h: String,
    /// Baseline of the reason labels above the bars.
    pub label_y: String,
    pub ticks: Vec<Tick>,
    pub bars: Vec<Bar>,
    pub future_loss: Option<FutureLoss>,
    pub markers: Vec<Marker>,
}

fn px(v: f64) -> String {
    format!("{v:.1}")
}

fn status_str(s: EventStatus) -> &'static str {
    match s {
        EventStatus::InForce => "in_force",
        EventStatus::Corrected => "corrected",
        EventStatus::Rescinded => "rescinded",
    }
}

struct Scale {
    start: NaiveDate,
    days: f64,
}

impl Scale {
    fn x(&self, d: NaiveDate) -> f64 {
        let f = (d - self.start).num_days() as f64 / self.days;
        LEFT + f.clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }
}

/// The chart of a timeline read at `today`; `late_elderly_on` is the coming 75th-birthday loss
/// of a person insured today, `birth_date` where the axis may begin.
pub fn chart(
    t: &TimelineView,
    today: NaiveDate,
    late_elderly_on: Option<NaiveDate>,
    birth_date: Option<NaiveDate>,
) -> Chart {
    let mut dates: Vec<NaiveDate> = vec![today];
    dates.extend(t.intervals.iter().flat_map(|i| [Some(i.from), i.to]).flatten());
    dates.extend(t.events.iter().filter_map(|e| e.effective_date));
    dates.extend(late_elderly_on);
    let first = dates.iter().min().copied().unwrap_or(today);
    // The axis starts at birth when the history is short, so the chart reads as a life.
    let first = match birth_date {
        Some(b) if b < first && first.year() - b.year() <= 10 => b,
        _ => first,
    };
    let last = dates.iter().max().copied().unwrap_or(today);
    let start = NaiveDate::from_ymd_opt(first.year(), 1, 1).unwrap_or(first);
    let end = NaiveDate::from_ymd_opt(last.year() + 1, 1, 1).unwrap_or(last);
    let scale = Scale {
        start,
        days: ((end - start).num_days().max(1)) as f64,
    };
    let years = end.year() - start.year();
    let step = match years {
        0..=12 => 1,
        13..=30 => 2,
        31..=60 => 5,
        _ => 10,
    };
    let ticks = (start.year()..=end.year())
        .filter(|y| y % step == 0 || *y == start.year())
        .filter_map(|y| NaiveDate::from_ymd_opt(y, 1, 1))
        .map(|d| Tick {
            x: px(scale.x(d)),
            label: d.year().to_string(),
        })
        .collect();

    let bars = t
        .intervals
        .iter()
        .map(|i| {
            let x0 = scale.x(i.from);
            let to_x = i.to.map(|d| scale.x(d));
            let today_x = scale.x(today);
            let (solid_end, future) = match i.to {
                Some(to) if to > today && i.from <= today => (today_x, Some((px(today_x), px(scale.x(to) - today_x)))),
                Some(to) if i.from > today => (x0, Some((px(x0), px(scale.x(to) - x0)))),
                Some(_) => (to_x.unwrap_or(today_x), None),
                None => (today_x.max(x0), None),
            };
            let end_label = i.loss_reason.as_deref().map(labels::loss).unwrap_or("").to_owned();
            let title = format!(
                "{} 〜 {}（{}{}）",
                i.from,
                i.applied_to.map(|d| d.to_string()).unwrap_or_default(),
                labels::acquisition(&i.acquisition_reason),
                if end_label.is_empty() {
                    String::new()
                } else {
                    format!("・{end_label}")
                },
            );
            Bar {
                from: i.from.to_string(),
                to: i.to.map(|d| d.to_string()).unwrap_or_default(),
                x: px(x0),
                w: px((solid_end - x0).max(2.0)),
                future,
                start_label: labels::acquisition(&i.acquisition_reason).to_owned(),
                end_label,
                end_x: px(to_x.unwrap_or(solid_end)),
                title,
            }
        })
        .collect();

    let open_now = t.intervals.iter().any(|i| i.to.is_none() && i.from <= today);
    let future_loss = late_elderly_on.filter(|d| open_now && *d > today).map(|d| {
        let x0 = scale.x(today);
        FutureLoss {
            on: d.to_string(),
            x: px(x0),
            w: px((scale.x(d) - x0).max(2.0)),
            label: format!("75歳到達予定 {d}"),
        }
    });

    let corrected_by = |seq: i64| {
        t.events
            .iter()
            .filter(|e| matches!(e.event_type.as_str(), "corrected" | "rescinded"))
            .filter(|e| e.body.get("target_sequence").and_then(Value::as_i64) == Some(seq))
            .map(|e| e.sequence)
            .next_back()
    };
    let mut placed: Vec<(f64, usize)> = Vec::new();
    let markers = t
        .events
        .iter()
        .filter_map(|e| {
            let date = e.effective_date?;
            let x = scale.x(date);
            // Events close together stack in lanes instead of hiding each other.
            let lane = (0..MAX_LANES)
                .find(|l| !placed.iter().any(|(px, pl)| pl == l && (px - x).abs() < 9.0))
                .unwrap_or(MAX_LANES - 1);
            placed.push((x, lane));
            let status = status_str(e.status);
            let y = MARKER_Y + lane as f64 * LANE;
            let corrected_by = corrected_by(e.sequence);
            Some(Marker {
                href: format!("#event-{}", corrected_by.unwrap_or(e.sequence)),
                x1: px(x - 7.0),
                x2: px(x + 7.0),
                flag_y: px(y - 7.0),
                sequence: e.sequence,
                status,
                x: px(x),
                y: px(y),
                label: labels::event_type(&e.event_type),
                title: format!(
                    "#{} {} {}{}{}",
                    e.sequence,
                    labels::event_type(&e.event_type),
                    date,
                    if e.status == EventStatus::InForce {
                        String::new()
                    } else {
                        format!("（{}）", labels::status(status))
                    },
                    if e.late_report { "（遅延届出）" } else { "" },
                ),
                late: e.late_report,
                corrected_by,
                struck: e.status != EventStatus::InForce,
            })
        })
        .collect();
    let lanes = placed.iter().map(|(_, l)| *l).max().map_or(1, |l| l + 1);
    let axis_y = MARKER_Y + lanes as f64 * LANE + 6.0;
    Chart {
        width: px(WIDTH),
        height: px(axis_y + 22.0),
        axis_y: px(axis_y),
        tick_top: px(BAR_Y - 12.0),
        today_x: px(scale.x(today)),
        today: today.to_string(),
        bar_y: px(BAR_Y),
        bar_h: px(BAR_H),
        label_y: px(BAR_Y - 4.0),
        ticks,
        bars,
        future_loss,
        markers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reads::views::{EventView, IntervalView};

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn interval(from: &str, to: Option<&str>, loss: Option<&str>) -> IntervalView {
        IntervalView {
            from: d(from),
            to: to.map(d),
            acquisition_reason: "moved_in".into(),
            loss_reason: loss.map(str::to_owned),
            loss_code: None,
            qualified_on: d(from),
            disqualified_on: to.map(d),
            applied_to: to.map(d).and_then(|t| t.pred_opt()),
            household_id: None,
            card: None,
        }
    }

    fn event(seq: i64, ty: &str, date: &str, status: EventStatus, body: Value) -> EventView {
        EventView {
            sequence: seq,
            position: seq,
            event_type: ty.into(),
            effective_date: Some(d(date)),
            reported_date: Some(d(date)),
            recorded_at: String::new(),
            late_report: false,
            status,
            body,
            recorded_by: "clerk".into(),
        }
    }

    #[test]
    fn two_periods_a_correction_and_a_future_move_out() {
        let t = TimelineView {
            person_id: "1".into(),
            intervals: vec![
                interval("2010-04-01", Some("2015-06-01"), Some("moved_out")),
                interval("2020-01-10", Some("2027-01-10"), Some("moved_out")),
            ],
            events: vec![
                event(1, "moved_in", "2010-04-01", EventStatus::InForce, Value::Null),
                event(2, "moved_out", "2015-05-01", EventStatus::Corrected, Value::Null),
                event(
                    3,
                    "corrected",
                    "2016-01-01",
                    EventStatus::InForce,
                    serde_json::json!({"target_sequence": 2}),
                ),
                event(4, "moved_in", "2020-01-10", EventStatus::InForce, Value::Null),
            ],
        };
        let c = chart(&t, d("2026-12-02"), None, None);
        assert_eq!(c.bars.len(), 2);
        assert_eq!(
            (c.bars[0].from.as_str(), c.bars[0].to.as_str()),
            ("2010-04-01", "2015-06-01")
        );
        assert!(c.bars[0].future.is_none());
        assert!(c.bars[1].future.is_some(), "the pre-filed move-out is drawn as future");
        assert_eq!(c.markers.len(), 4);
        assert_eq!(c.markers[1].status, "corrected");
        assert_eq!(c.markers[1].corrected_by, Some(3));
        assert!(c.markers[1].struck);
        assert_eq!(c.ticks.first().unwrap().label, "2010");
        let x = |s: &str| s.parse::<f64>().unwrap();
        assert!(x(&c.bars[0].x) < x(&c.bars[1].x));
        assert!(x(&c.today_x) > x(&c.bars[1].x));
    }

    #[test]
    fn an_open_interval_with_the_75th_birthday_ahead() {
        let t = TimelineView {
            person_id: "1".into(),
            intervals: vec![interval("2000-01-01", None, None)],
            events: vec![],
        };
        let c = chart(&t, d("2026-12-02"), Some(d("2028-03-01")), None);
        assert_eq!(c.bars[0].to, "");
        let f = c.future_loss.unwrap();
        assert_eq!(f.on, "2028-03-01");
        // 2000–2029 spans 29 years: a tick every second year.
        assert_eq!(
            c.ticks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>()[..3],
            ["2000", "2002", "2004"]
        );
    }
}
