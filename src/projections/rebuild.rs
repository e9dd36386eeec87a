//! `rebuild` (empty the read models, build them again from the log) and `dump` (their rows, to
//! compare a rebuild with the incremental runs).

use super::runner::REBUILD_BATCH;
use super::{ProjectionError, Projections, RebuildSummary};
use crate::store::sql::{Ty, Val};
use crate::store::StoreError;

impl Projections {
    /// Empties every projection and builds it again from position 1. Card and branch numbers
    /// are events in the log, so the rebuild reads them; it never issues or changes one.
    pub async fn rebuild(&self, progress: impl Fn(u64)) -> Result<RebuildSummary, ProjectionError> {
        let started = std::time::Instant::now();
        let mut tx = self.db.begin().await?;
        let tables: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.projection.rebuildable())
            .flat_map(|e| e.projection.tables())
            .map(|(t, _)| t)
            .collect();
        if tx.is_postgres() {
            tx.execute(&format!("TRUNCATE {}", tables.join(", ")), &[]).await?;
        } else {
            for table in &tables {
                tx.execute(&format!("DELETE FROM {table}"), &[]).await?;
            }
        }
        for e in self.entries.iter().filter(|e| e.projection.rebuildable()) {
            tx.execute(
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) \
                 ON CONFLICT (name) DO UPDATE SET position = 0, updated_at = CURRENT_TIMESTAMP",
                &[Val::text(e.projection.name())],
            )
            .await?;
        }
        tx.commit().await?;
        // Nothing is served meanwhile: larger transactions than the runners'.
        self.catch_up_in(self.batch.max(REBUILD_BATCH), progress).await?;
        let mut rows = Vec::new();
        for e in self.entries.iter().filter(|e| e.projection.rebuildable()) {
            for (table, _) in e.projection.tables() {
                let n = self
                    .db
                    .fetch(&format!("SELECT count(*) FROM {table}"), &[], &[Ty::Int])
                    .await?;
                rows.push((table, n.first().and_then(|r| r[0].as_int()).unwrap_or(0)));
            }
        }
        let built = started.elapsed().as_secs_f64();
        let mut verified = Vec::new();
        for e in self.entries.iter().filter(|e| !e.projection.rebuildable()) {
            let upto = self.stored_checkpoint(e.projection.name()).await?;
            verified.extend(e.projection.verify(&self.store, upto).await?);
        }
        Ok(RebuildSummary {
            verified,
            events: self.store.head().await?,
            seconds: started.elapsed().as_secs_f64(),
            build_seconds: built,
            projections: self
                .entries
                .iter()
                .filter(|e| e.projection.rebuildable())
                .map(|e| (e.projection.name(), *e.position.borrow()))
                .collect(),
            rows,
        })
    }

    /// Every projection table's rows, in a fixed order: what "rebuilt equals incremental"
    /// compares.
    pub async fn dump(&self) -> Result<Vec<(&'static str, Vec<Vec<Val>>)>, StoreError> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.projection.rebuildable()) {
            for (table, cols) in e.projection.tables() {
                let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
                let tys: Vec<Ty> = cols.iter().map(|(_, t)| *t).collect();
                let list = names.join(", ");
                let rows = self
                    .db
                    .fetch(&format!("SELECT {list} FROM {table} ORDER BY {list}"), &[], &tys)
                    .await?;
                out.push((table, rows));
            }
        }
        Ok(out)
    }

    /// Smaller batches, so tests cross batch boundaries with few events.
    pub fn with_batch(mut self, batch: i64) -> Self {
        self.batch = batch.max(1);
        self
    }
}
