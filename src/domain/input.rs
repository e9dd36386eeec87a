//! Parsing of event bodies (API requests and import lines) into domain events. Every malformed
//! input gets its own code (answered 400); rules of the history are checked later (422).

use chrono::NaiveDate;
use serde_json::{Map, Value};

use super::error::InputError;
use super::event::{
    HouseholdEvent, HouseholdFact, NameChange, PersonEvent, PersonFact, Place, Registration, HOUSEHOLD_EVENT_TYPES,
    PERSON_EVENT_TYPES,
};
use super::ids::{Branch, CardNumber, CardSymbol, HouseholdId, Kana, MyNumber, Name, PersonId, Sex};

/// A person event as parsed, with what must not enter the log kept apart.
#[derive(Debug, Clone)]
pub struct PersonInput {
    pub event: PersonEvent,
    /// For `registered` (or a correction of it): goes to the vault; only its commitment is logged.
    pub my_number: Option<MyNumber>,
    /// A correction's replacement without `reported_date`: it keeps the target's.
    pub replacement_reported_date_missing: bool,
}

const COMMON: &[&str] = &["type", "effective_date", "reported_date"];

/// Parses a strict `YYYY-MM-DD` date.
pub fn parse_date(field: &str, s: &str) -> Result<NaiveDate, InputError> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(InputError::new(
            "invalid_date",
            format!("{field} must be a date YYYY-MM-DD"),
        ));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| InputError::new("invalid_date", format!("{field} {s} is not a day of the calendar")))
}

struct Body<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Body<'a> {
    fn new(v: &'a Value, prefix: &'static str) -> Result<Self, InputError> {
        match v {
            Value::Object(map) => Ok(Self { map, prefix }),
            _ => Err(InputError::new(
                "invalid_body",
                format!("{prefix}the event must be a JSON object"),
            )),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn only(&self, allowed: &[&[&str]]) -> Result<(), InputError> {
        for k in self.map.keys() {
            if !allowed.iter().any(|set| set.contains(&k.as_str())) {
                return Err(InputError::new(
                    "unknown_field",
                    format!("unknown field {}", self.name(k)),
                ));
            }
        }
        Ok(())
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, InputError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(InputError::new(
                "invalid_field",
                format!("{} must be a string", self.name(key)),
            )),
        }
    }

    fn str(&self, key: &str) -> Result<&'a str, InputError> {
        self.opt_str(key)?
            .ok_or_else(|| InputError::new("missing_field", format!("{} is required", self.name(key))))
    }

    fn opt_date(&self, key: &str) -> Result<Option<NaiveDate>, InputError> {
        self.opt_str(key)?.map(|s| parse_date(&self.name(key), s)).transpose()
    }

    fn date(&self, key: &str) -> Result<NaiveDate, InputError> {
        parse_date(&self.name(key), self.str(key)?)
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, InputError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(InputError::new(
                "invalid_field",
                format!("{} must be true or false", self.name(key)),
            )),
        }
    }

    fn sequence(&self, key: &str) -> Result<u64, InputError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Err(InputError::new(
                "missing_field",
                format!("{} is required", self.name(key)),
            )),
            // `3.0` is the integer 3: JSON (and the JSON Schema `integer`) do not tell them apart.
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(f))
                        .map(|f| f as u64)
                })
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    InputError::new(
                        "invalid_field",
                        format!("{} must be a positive integer", self.name(key)),
                    )
                }),
            Some(_) => Err(InputError::new(
                "invalid_field",
                format!("{} must be a positive integer", self.name(key)),
            )),
        }
    }

    fn type_name(&self, known: &[&str], what: &str) -> Result<&'a str, InputError> {
        let ty = self.str("type")?;
        if known.contains(&ty) {
            Ok(ty)
        } else {
            Err(InputError::new(
                "unknown_event_type",
                format!("unknown {what} event type {ty:?}"),
            ))
        }
    }

    fn place(&self, key: &str) -> Result<Place, InputError> {
        let s = self.str(key)?;
        Place::parse(s).ok_or_else(|| {
            InputError::new(
                "invalid_field",
                format!("{} must be other_prefecture, same_prefecture or abroad", self.name(key)),
            )
        })
    }
}

fn opt<T>(v: Option<&str>, parse: impl Fn(&str) -> Result<T, InputError>) -> Result<Option<T>, InputError> {
    v.map(parse).transpose()
}

/// Parses a person event body. `today` fills `reported_date` (and the decision day of
/// corrections) when absent.
pub fn parse_person_event(v: &Value, today: NaiveDate) -> Result<PersonInput, InputError> {
    parse_person(v, today, "", true)
}

fn parse_person(
    v: &Value,
    today: NaiveDate,
    prefix: &'static str,
    allow_correction: bool,
) -> Result<PersonInput, InputError> {
    let b = Body::new(v, prefix)?;
    let ty = b.type_name(PERSON_EVENT_TYPES, "person")?;
    let correction = matches!(ty, "corrected" | "rescinded");
    if correction && !allow_correction {
        return Err(InputError::new(
            "invalid_field",
            "a replacement cannot be a correction or rescission",
        ));
    }
    let mut my_number = None;
    let mut replacement_reported_date_missing = false;
    let extra: &[&str] = match ty {
        "registered" => &[
            "name",
            "name_kana",
            "real_name",
            "real_name_kana",
            "birth_date",
            "sex",
            "sex_on_back",
            "my_number",
        ],
        "moved_in" => &["from", "household_id", "qualified_on"],
        "born" | "household_changed" => &["household_id"],
        "moved_out" => &["to"],
        "name_changed" => &["name", "name_kana", "real_name", "real_name_kana"],
        "corrected" => &["target_sequence", "replacement"],
        "rescinded" => &["target_sequence", "reason"],
        _ => &[],
    };
    b.only(&[COMMON, extra])?;
    let household = || HouseholdId::parse(b.str("household_id")?);
    let fact = match ty {
        "registered" => {
            my_number = opt(b.opt_str("my_number")?, MyNumber::parse)?;
            PersonFact::Registered(Registration {
                name: Name::parse(b.str("name")?)?,
                name_kana: Kana::parse(b.str("name_kana")?)?,
                real_name: opt(b.opt_str("real_name")?, Name::parse)?,
                real_name_kana: opt(b.opt_str("real_name_kana")?, Kana::parse)?,
                birth_date: b.date("birth_date")?,
                sex: Sex::parse(b.str("sex")?)?,
                sex_on_back: b.opt_bool("sex_on_back")?.unwrap_or(true),
                my_number_commitment: None,
            })
        }
        "moved_in" => {
            let from = b.place("from")?;
            let qualified_on = b.opt_date("qualified_on")?;
            if qualified_on.is_some() && from != Place::SamePrefecture {
                return Err(InputError::new(
                    "field_not_allowed",
                    format!(
                        "{} is allowed only for a move-in from the same prefecture",
                        b.name("qualified_on")
                    ),
                ));
            }
            PersonFact::MovedIn {
                from,
                household_id: household()?,
                qualified_on,
            }
        }
        "born" => PersonFact::Born {
            household_id: household()?,
        },
        "household_changed" => PersonFact::HouseholdChanged {
            household_id: household()?,
        },
        "moved_out" => PersonFact::MovedOut { to: b.place("to")? },
        "name_changed" => PersonFact::NameChanged(NameChange {
            name: Name::parse(b.str("name")?)?,
            name_kana: Kana::parse(b.str("name_kana")?)?,
            real_name: opt(b.opt_str("real_name")?, Name::parse)?,
            real_name_kana: opt(b.opt_str("real_name_kana")?, Kana::parse)?,
        }),
        "corrected" => {
            let target_sequence = b.sequence("target_sequence")?;
            let r = b
                .map
                .get("replacement")
                .ok_or_else(|| InputError::new("missing_field", "replacement is required"))?;
            let inner = parse_person(r, today, "replacement.", false)?;
            my_number = inner.my_number;
            replacement_reported_date_missing = matches!(r.get("reported_date"), None | Some(Value::Null));
            PersonFact::Corrected {
                target_sequence,
                replacement: Box::new(inner.event),
            }
        }
        "rescinded" => {
            let target_sequence = b.sequence("target_sequence")?;
            let reason = b.str("reason")?.trim();
            if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
                return Err(InputError::new("invalid_field", "reason must be 1 to 500 characters"));
            }
            PersonFact::Rescinded {
                target_sequence,
                reason: reason.to_owned(),
            }
        }
        "died" => PersonFact::Died,
        "employee_insurance_joined" => PersonFact::EmployeeInsuranceJoined,
        "employee_insurance_left" => PersonFact::EmployeeInsuranceLeft,
        "welfare_started" => PersonFact::WelfareStarted,
        "welfare_ended" => PersonFact::WelfareEnded,
        "nhi_union_joined" => PersonFact::NhiUnionJoined,
        "nhi_union_left" => PersonFact::NhiUnionLeft,
        "late_elderly_disability_certified" => PersonFact::LateElderlyDisabilityCertified,
        "late_elderly_disability_withdrawn" => PersonFact::LateElderlyDisabilityWithdrawn,
        "foreign_resident_excluded" => PersonFact::ForeignResidentExcluded,
        "foreign_resident_included" => PersonFact::ForeignResidentIncluded,
        "disclosure_restricted" => PersonFact::DisclosureRestricted,
        "disclosure_restriction_lifted" => PersonFact::DisclosureRestrictionLifted,
        "document_collected" => PersonFact::DocumentCollected,
        "late_elderly_age_reached" => PersonFact::LateElderlyAgeReached,
        other => unreachable!("type {other} is in PERSON_EVENT_TYPES"),
    };
    let effective_date = if correction {
        b.opt_date("effective_date")?.unwrap_or(today)
    } else {
        b.date("effective_date")?
    };
    let reported_date = b.opt_date("reported_date")?.unwrap_or(today);
    Ok(PersonInput {
        event: PersonEvent {
            effective_date,
            reported_date,
            fact,
        },
        my_number,
        replacement_reported_date_missing,
    })
}

/// Parses a household event body.
pub fn parse_household_event(v: &Value, today: NaiveDate) -> Result<HouseholdEvent, InputError> {
    let b = Body::new(v, "")?;
    let ty = b.type_name(HOUSEHOLD_EVENT_TYPES, "household")?;
    let extra: &[&str] = match ty {
        "household_head_changed" | "nhi_head_designated" => &["person_id"],
        "card_number_assigned" => &["symbol", "number"],
        "branch_number_issued" => &["person_id", "symbol", "number", "branch"],
        _ => &[],
    };
    b.only(&[COMMON, extra])?;
    let person = || PersonId::parse(b.str("person_id")?);
    let fact = match ty {
        "household_head_changed" => HouseholdFact::HouseholdHeadChanged { person_id: person()? },
        "nhi_head_designated" => HouseholdFact::NhiHeadDesignated { person_id: person()? },
        "nhi_head_designation_revoked" => HouseholdFact::NhiHeadDesignationRevoked,
        "card_number_assigned" => HouseholdFact::CardNumberAssigned {
            symbol: CardSymbol::parse(b.str("symbol")?)?,
            number: CardNumber::parse(b.str("number")?)?,
        },
        "branch_number_issued" => HouseholdFact::BranchNumberIssued {
            person_id: person()?,
            symbol: CardSymbol::parse(b.str("symbol")?)?,
            number: CardNumber::parse(b.str("number")?)?,
            branch: Branch::parse(b.str("branch")?)?,
        },
        other => unreachable!("type {other} is in HOUSEHOLD_EVENT_TYPES"),
    };
    Ok(HouseholdEvent {
        effective_date: b.date("effective_date")?,
        reported_date: b.opt_date("reported_date")?.unwrap_or(today),
        fact,
    })
}

/// The criteria of a person search (api.md "Search"); at least one is given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchInput {
    /// Kana prefix without spaces (half-width kana accepted and widened, as stored).
    pub name_kana: Option<String>,
    pub name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub household_id: Option<HouseholdId>,
    pub my_number: Option<MyNumber>,
}

/// Parses a search body: unknown fields and malformed criteria are refused.
pub fn parse_search(v: &Value) -> Result<SearchInput, InputError> {
    let b = Body::new(v, "")?;
    b.only(&[&["name_kana", "name", "birth_date", "household_id", "my_number"]])?;
    let name_kana = opt(b.opt_str("name_kana")?, Kana::parse)?.map(|k| k.search_key());
    let input = SearchInput {
        name_kana: name_kana.filter(|k| !k.is_empty()),
        name: opt(b.opt_str("name")?, Name::parse)?.map(|n| n.as_str().to_owned()),
        birth_date: b.opt_date("birth_date")?,
        household_id: opt(b.opt_str("household_id")?, HouseholdId::parse)?,
        my_number: opt(b.opt_str("my_number")?, MyNumber::parse)?,
    };
    if input == SearchInput::default() {
        return Err(InputError::new(
            "empty_search",
            "give at least one of name_kana, name, birth_date, household_id, my_number",
        ));
    }
    Ok(input)
}
