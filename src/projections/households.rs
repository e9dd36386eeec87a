//! The `households` projection: register heads, NHI head designations, card numbers and
//! branch numbers. Household facts are never corrected, so each is one row stamped with its
//! position (its knowledge time).

use cqrs_es::Aggregate;

use super::{Prepared, Projection, ProjectionError};
use crate::codec::decode;
use crate::domain::{Household, HouseholdFact};
use crate::store::sql::{Tx, Ty, Val};
use crate::store::{Store, StoredEvent};

pub const NAME: &str = "households";

const FACT_COLS: [(&str, Ty); 5] = [
    ("household_id", Ty::Text),
    ("position", Ty::Int),
    ("kind", Ty::Text),
    ("effective_date", Ty::Text),
    ("person_id", Ty::Text),
];
const CARD_COLS: [(&str, Ty); 4] = [
    ("household_id", Ty::Text),
    ("symbol", Ty::Text),
    ("number", Ty::Text),
    ("position", Ty::Int),
];
const BRANCH_COLS: [(&str, Ty); 6] = [
    ("symbol", Ty::Text),
    ("number", Ty::Text),
    ("branch", Ty::Text),
    ("person_id", Ty::Text),
    ("household_id", Ty::Text),
    ("position", Ty::Int),
];

pub struct Households;

#[async_trait::async_trait]
impl Projection for Households {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> Vec<(&'static str, Vec<(&'static str, Ty)>)> {
        vec![
            ("proj_household_fact", FACT_COLS.to_vec()),
            ("proj_card", CARD_COLS.to_vec()),
            ("proj_branch", BRANCH_COLS.to_vec()),
        ]
    }

    async fn apply(&self, _: &Store, tx: &mut Tx, batch: &[StoredEvent], _: Prepared) -> Result<(), ProjectionError> {
        let (mut facts, mut cards, mut branches) = (Vec::new(), Vec::new(), Vec::new());
        for e in batch.iter().filter(|e| e.aggregate_type == Household::TYPE) {
            let event = decode::<Household>(e)?;
            let id = Val::text(&e.aggregate_id);
            let at = Val::Int(Some(e.position));
            let fact = |kind: &str, person: Option<&crate::domain::PersonId>| {
                vec![
                    id.clone(),
                    at.clone(),
                    Val::text(kind),
                    Val::text(event.effective_date.to_string()),
                    Val::opt_text(person),
                ]
            };
            match &event.fact {
                HouseholdFact::HouseholdHeadChanged { person_id } => facts.push(fact("head", Some(person_id))),
                HouseholdFact::NhiHeadDesignated { person_id } => facts.push(fact("designation", Some(person_id))),
                HouseholdFact::NhiHeadDesignationRevoked => facts.push(fact("revocation", None)),
                HouseholdFact::CardNumberAssigned { symbol, number } => cards.push(vec![
                    id.clone(),
                    Val::text(symbol.as_str()),
                    Val::text(number.as_str()),
                    at.clone(),
                ]),
                HouseholdFact::BranchNumberIssued {
                    person_id,
                    symbol,
                    number,
                    branch,
                } => branches.push(vec![
                    Val::text(symbol.as_str()),
                    Val::text(number.as_str()),
                    Val::text(branch.to_string()),
                    Val::text(person_id.as_str()),
                    id.clone(),
                    at.clone(),
                ]),
            }
        }
        tx.insert("proj_household_fact", &FACT_COLS, facts).await?;
        tx.insert("proj_card", &CARD_COLS, cards).await?;
        tx.insert("proj_branch", &BRANCH_COLS, branches).await?;
        Ok(())
    }
}
