//! The answers of the read endpoints (api.md), as serialised.

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;

use crate::domain::person::EventStatus;

#[derive(Debug, Serialize, PartialEq)]
pub struct CardView {
    pub insurer_number: String,
    pub symbol: String,
    pub number: String,
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PersonView {
    pub person_id: String,
    pub name: String,
    pub name_kana: String,
    pub real_name: Option<String>,
    pub real_name_kana: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: String,
    pub sex_on_back: bool,
    pub household_id: Option<String>,
    pub insured: bool,
    pub qualified_on: Option<NaiveDate>,
    pub disqualified_on: Option<NaiveDate>,
    pub applied_from: Option<NaiveDate>,
    /// Inclusive last covered day (適用終了年月日).
    pub applied_to: Option<NaiveDate>,
    pub loss_reason: Option<String>,
    pub loss_code: Option<String>,
    pub card: Option<CardView>,
    /// The coming 75th-birthday loss of a person insured today (derived, not yet reached).
    pub late_elderly_on: Option<NaiveDate>,
    pub deemed_head: bool,
    pub disclosure_restricted: bool,
    pub deceased_on: Option<NaiveDate>,
    pub last_sequence: u64,
    pub today: NaiveDate,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct IntervalCard {
    pub symbol: String,
    pub number: String,
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct IntervalView {
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
    pub acquisition_reason: String,
    pub loss_reason: Option<String>,
    pub loss_code: Option<String>,
    pub qualified_on: NaiveDate,
    pub disqualified_on: Option<NaiveDate>,
    /// Inclusive last covered day of this interval (`to` − 1).
    pub applied_to: Option<NaiveDate>,
    pub household_id: Option<String>,
    pub card: Option<IntervalCard>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct EventView {
    pub sequence: i64,
    pub position: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub effective_date: Option<NaiveDate>,
    pub reported_date: Option<NaiveDate>,
    pub recorded_at: String,
    pub late_report: bool,
    pub status: EventStatus,
    pub body: Value,
    /// Who recorded it (the metadata's actor): shown by the console, not part of the API's
    /// timeline body.
    #[serde(skip)]
    pub recorded_by: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TimelineView {
    pub person_id: String,
    pub intervals: Vec<IntervalView>,
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct EligibilityView {
    pub person_id: String,
    pub on: NaiveDate,
    pub insured: bool,
    pub interval: Option<IntervalView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HouseholdCard {
    pub symbol: String,
    pub number: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct MemberView {
    pub person_id: String,
    pub insured: bool,
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HouseholdView {
    pub household_id: String,
    /// Resident-register head (住基上の世帯主) today.
    pub head_person_id: Option<String>,
    /// NHI head (国保上の世帯主): the designated insured member, else the register head.
    pub nhi_head_person_id: Option<String>,
    /// Whether the register head is a deemed head (擬制世帯主) today.
    pub deemed_head: bool,
    pub card: Option<HouseholdCard>,
    pub members: Vec<MemberView>,
    pub today: NaiveDate,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct BranchView {
    pub branch: String,
    pub person_id: String,
    pub issued_at_position: i64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct CardBranchesView {
    pub symbol: String,
    pub number: String,
    pub household_id: String,
    pub branches: Vec<BranchView>,
}
