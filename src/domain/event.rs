//! Events as stored in the log. The payload of a stored event is the serde form of these types
//! (internally tagged by `type`), so the log and the audit entries read like the API bodies.

use chrono::NaiveDate;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::ids::{Branch, CardNumber, CardSymbol, HouseholdId, Kana, Name, PersonId, Sex};

/// Schema version of every event type today. Upcasters take over when a type changes.
pub const EVENT_VERSION: &str = "1";

/// Where a move-in came from / where a move-out goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    OtherPrefecture,
    SamePrefecture,
    Abroad,
}

impl Place {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "other_prefecture" => Some(Place::OtherPrefecture),
            "same_prefecture" => Some(Place::SamePrefecture),
            "abroad" => Some(Place::Abroad),
            _ => None,
        }
    }
}

/// One event of a person's stream: the two dates every event carries, and the fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersonEvent {
    /// 異動日; for `corrected`/`rescinded` the day the correction was decided.
    pub effective_date: NaiveDate,
    /// 届出日.
    pub reported_date: NaiveDate,
    #[serde(flatten)]
    pub fact: PersonFact,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub name: Name,
    pub name_kana: Kana,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_name_kana: Option<Kana>,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub sex_on_back: bool,
    /// Lowercase hex SHA-256(salt ‖ my_number); the number itself lives in the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub my_number_commitment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NameChange {
    pub name: Name,
    pub name_kana: Kana,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_name_kana: Option<Kana>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PersonFact {
    Registered(Registration),
    MovedIn {
        from: Place,
        household_id: HouseholdId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qualified_on: Option<NaiveDate>,
    },
    Born {
        household_id: HouseholdId,
    },
    MovedOut {
        to: Place,
    },
    Died,
    EmployeeInsuranceJoined,
    EmployeeInsuranceLeft,
    WelfareStarted,
    WelfareEnded,
    NhiUnionJoined,
    NhiUnionLeft,
    LateElderlyDisabilityCertified,
    LateElderlyDisabilityWithdrawn,
    ForeignResidentExcluded,
    ForeignResidentIncluded,
    HouseholdChanged {
        household_id: HouseholdId,
    },
    NameChanged(NameChange),
    DisclosureRestricted,
    DisclosureRestrictionLifted,
    DocumentCollected,
    /// System event: the 75th birthday arrived (confirms the derived loss; feeds the feed).
    LateElderlyAgeReached,
    Corrected {
        target_sequence: u64,
        replacement: Box<PersonEvent>,
    },
    Rescinded {
        target_sequence: u64,
        reason: String,
    },
}

/// Every person event type, in the order of domain.md §3–§4.
pub const PERSON_EVENT_TYPES: &[&str] = &[
    "registered",
    "moved_in",
    "born",
    "moved_out",
    "died",
    "employee_insurance_joined",
    "employee_insurance_left",
    "welfare_started",
    "welfare_ended",
    "nhi_union_joined",
    "nhi_union_left",
    "late_elderly_disability_certified",
    "late_elderly_disability_withdrawn",
    "foreign_resident_excluded",
    "foreign_resident_included",
    "household_changed",
    "name_changed",
    "disclosure_restricted",
    "disclosure_restriction_lifted",
    "document_collected",
    "late_elderly_age_reached",
    "corrected",
    "rescinded",
];

impl PersonFact {
    /// Recorded by the ledger itself, never accepted (nor corrected, nor rescinded) from
    /// outside.
    pub fn is_system(&self) -> bool {
        matches!(self, PersonFact::LateElderlyAgeReached)
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            PersonFact::Registered(_) => "registered",
            PersonFact::MovedIn { .. } => "moved_in",
            PersonFact::Born { .. } => "born",
            PersonFact::MovedOut { .. } => "moved_out",
            PersonFact::Died => "died",
            PersonFact::EmployeeInsuranceJoined => "employee_insurance_joined",
            PersonFact::EmployeeInsuranceLeft => "employee_insurance_left",
            PersonFact::WelfareStarted => "welfare_started",
            PersonFact::WelfareEnded => "welfare_ended",
            PersonFact::NhiUnionJoined => "nhi_union_joined",
            PersonFact::NhiUnionLeft => "nhi_union_left",
            PersonFact::LateElderlyDisabilityCertified => "late_elderly_disability_certified",
            PersonFact::LateElderlyDisabilityWithdrawn => "late_elderly_disability_withdrawn",
            PersonFact::ForeignResidentExcluded => "foreign_resident_excluded",
            PersonFact::ForeignResidentIncluded => "foreign_resident_included",
            PersonFact::HouseholdChanged { .. } => "household_changed",
            PersonFact::NameChanged(_) => "name_changed",
            PersonFact::DisclosureRestricted => "disclosure_restricted",
            PersonFact::DisclosureRestrictionLifted => "disclosure_restriction_lifted",
            PersonFact::DocumentCollected => "document_collected",
            PersonFact::LateElderlyAgeReached => "late_elderly_age_reached",
            PersonFact::Corrected { .. } => "corrected",
            PersonFact::Rescinded { .. } => "rescinded",
        }
    }

    pub fn is_correction(&self) -> bool {
        matches!(self, PersonFact::Corrected { .. } | PersonFact::Rescinded { .. })
    }

    /// The household the fact places the person in, if any.
    pub fn household(&self) -> Option<&HouseholdId> {
        match self {
            PersonFact::MovedIn { household_id, .. }
            | PersonFact::Born { household_id }
            | PersonFact::HouseholdChanged { household_id } => Some(household_id),
            _ => None,
        }
    }
}

impl DomainEvent for PersonEvent {
    fn event_type(&self) -> String {
        self.fact.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}

/// One event of a household's stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HouseholdEvent {
    pub effective_date: NaiveDate,
    pub reported_date: NaiveDate,
    #[serde(flatten)]
    pub fact: HouseholdFact,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HouseholdFact {
    /// The resident-register head (住基上の世帯主) from the effective date.
    HouseholdHeadChanged {
        person_id: PersonId,
    },
    /// 施行規則10条の2: an insured member is the NHI head instead of the register head.
    NhiHeadDesignated {
        person_id: PersonId,
    },
    NhiHeadDesignationRevoked,
    CardNumberAssigned {
        symbol: CardSymbol,
        number: CardNumber,
    },
    BranchNumberIssued {
        person_id: PersonId,
        symbol: CardSymbol,
        number: CardNumber,
        branch: Branch,
    },
}

pub const HOUSEHOLD_EVENT_TYPES: &[&str] = &[
    "household_head_changed",
    "nhi_head_designated",
    "nhi_head_designation_revoked",
    "card_number_assigned",
    "branch_number_issued",
];

impl HouseholdFact {
    pub fn type_name(&self) -> &'static str {
        match self {
            HouseholdFact::HouseholdHeadChanged { .. } => "household_head_changed",
            HouseholdFact::NhiHeadDesignated { .. } => "nhi_head_designated",
            HouseholdFact::NhiHeadDesignationRevoked => "nhi_head_designation_revoked",
            HouseholdFact::CardNumberAssigned { .. } => "card_number_assigned",
            HouseholdFact::BranchNumberIssued { .. } => "branch_number_issued",
        }
    }
}

impl DomainEvent for HouseholdEvent {
    fn event_type(&self) -> String {
        self.fact.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_is_flat_and_tagged() {
        let e = PersonEvent {
            effective_date: NaiveDate::from_ymd_opt(2025, 4, 1).unwrap(),
            reported_date: NaiveDate::from_ymd_opt(2025, 4, 2).unwrap(),
            fact: PersonFact::MovedIn {
                from: Place::SamePrefecture,
                household_id: HouseholdId::parse("200").unwrap(),
                qualified_on: None,
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"effective_date": "2025-04-01", "reported_date": "2025-04-02",
                "type": "moved_in", "from": "same_prefecture", "household_id": "200"})
        );
        let back: PersonEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let died = serde_json::to_value(PersonEvent {
            fact: PersonFact::Died,
            ..e
        })
        .unwrap();
        assert_eq!(died["type"], "died");
    }

    #[test]
    fn every_type_name_is_listed() {
        let facts = [
            PersonFact::Died,
            PersonFact::DocumentCollected,
            PersonFact::LateElderlyAgeReached,
        ];
        for f in facts {
            assert!(PERSON_EVENT_TYPES.contains(&f.type_name()));
        }
    }
}
