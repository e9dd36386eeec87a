//! `GET /v1/cards/{symbol}/{number}/branches`: every branch number issued under a card.

use super::sql;
use super::views::{BranchView, CardBranchesView};
use super::{At, Query, Reads};
use crate::domain::{CardNumber, CardSymbol};
use crate::error::LedgerError;

pub struct CardBranches {
    pub symbol: CardSymbol,
    pub number: CardNumber,
}

impl Query for CardBranches {
    type Answer = CardBranchesView;
    async fn run(&self, reads: &Reads, at: At) -> Result<CardBranchesView, LedgerError> {
        let db = reads.store.db();
        let (symbol, number) = (self.symbol.as_str(), self.number.as_str());
        let card = sql::card_by_number(db, symbol, number, at.position)
            .await?
            .ok_or_else(|| LedgerError::not_found("card_not_found", format!("no card {symbol}-{number}")))?;
        let branches = sql::branches(db, symbol, number, at.position)
            .await?
            .into_iter()
            .map(|b| BranchView {
                branch: b.branch,
                person_id: b.person_id,
                issued_at_position: b.position,
            })
            .collect();
        Ok(CardBranchesView {
            symbol: symbol.to_owned(),
            number: number.to_owned(),
            household_id: card.household_id,
            branches,
        })
    }
}
