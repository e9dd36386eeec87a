//! Room to keep answering when the embedded database's disk fills up.
//!
//! Every answer needs its access record written first (access.md), so a full disk would stop
//! reads as well as writes. The embedded default therefore keeps a reserve file beside the
//! database (`<database>.reserve`, allocated, not sparse). When SQLite reports the disk full,
//! the ledger stops taking events (503 `storage_unavailable` without trying), deletes the
//! reserve so that access records, projections and the audit chain have room, and looks at
//! the free space every second; once twice the reserve is free again it allocates the reserve
//! anew and takes events again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The reserve's size unless `KOKUHO_STORAGE_RESERVE_MB` says otherwise: about 100,000 access
/// records.
pub const DEFAULT_RESERVE_MB: u64 = 64;

/// How often a full disk is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// `KOKUHO_STORAGE_RESERVE_MB` (1 to 65,536), or the default.
pub fn reserve_bytes_from_env() -> Result<u64, String> {
    reserve_bytes(std::env::var("KOKUHO_STORAGE_RESERVE_MB").ok().as_deref())
}

fn reserve_bytes(setting: Option<&str>) -> Result<u64, String> {
    match setting {
        None => Ok(DEFAULT_RESERVE_MB << 20),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(mb @ 1..=65_536) => Ok(mb << 20),
            _ => Err(format!(
                "KOKUHO_STORAGE_RESERVE_MB must be a number of megabytes from 1 to 65536, not {v:?}"
            )),
        },
    }
}

/// The reserve of one database file.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
    full: AtomicBool,
}

impl Reserve {
    /// Allocates the reserve beside `database` if it is not there; a disk already too full
    /// for it starts in the full state. Watches the disk while the database is open.
    pub fn open(database: &Path, bytes: u64) -> Arc<Self> {
        let mut name = database.as_os_str().to_owned();
        name.push(".reserve");
        let reserve = Arc::new(Self {
            path: PathBuf::from(name),
            bytes,
            full: AtomicBool::new(false),
        });
        if let Err(e) = reserve.allocate() {
            tracing::warn!(error = %e, "no room for the storage reserve: events are refused until there is");
            reserve.full.store(true, Ordering::SeqCst);
        }
        tokio::spawn(watch(Arc::downgrade(&reserve)));
        reserve
    }

    /// True while events are refused for lack of space.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// SQLite said the disk is full: refuse events and give the reserve to everything else;
    /// true when space was freed now.
    pub fn exhausted(&self) -> bool {
        if !self.full.swap(true, Ordering::SeqCst) {
            tracing::error!("the disk of the database is full: events are refused, reads go on");
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(bytes = self.bytes, "storage reserve released");
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::error!(error = %e, "the storage reserve cannot be released");
                false
            }
        }
    }

    fn allocate(&self) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)?;
        let had = file.metadata()?.len();
        if had >= self.bytes {
            return Ok(());
        }
        // Allocated blocks, not a sparse length: the room must really be held.
        let done = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.bytes)
            .map_err(std::io::Error::from);
        if let Err(e) = done.and_then(|()| file.sync_all()) {
            // Another process's reserve (a command run beside `serve`, configured with a
            // bigger one) is kept as it is: it still holds room.
            if had == 0 {
                drop(file);
                let _ = std::fs::remove_file(&self.path);
            }
            return Err(e);
        }
        Ok(())
    }

    /// After a full disk: takes events again once twice the reserve is free and the reserve
    /// is allocated anew.
    fn try_recover(&self) {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let free = match rustix::fs::statvfs(dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the free space of the database's disk");
                return;
            }
        };
        if free < self.bytes.saturating_mul(2) {
            return;
        }
        match self.allocate() {
            Ok(()) => {
                self.full.store(false, Ordering::SeqCst);
                tracing::info!("the database's disk has room again: events are taken");
            }
            Err(e) => tracing::warn!(error = %e, "the storage reserve cannot be allocated yet"),
        }
    }
}

async fn watch(reserve: Weak<Reserve>) {
    loop {
        tokio::time::sleep(RECHECK).await;
        let Some(reserve) = reserve.upgrade() else { return };
        if reserve.is_full() {
            tokio::task::block_in_place(|| reserve.try_recover());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn reserve_is_allocated_released_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.db");
        let reserve = Reserve::open(&db, 1 << 20);
        let file = dir.path().join("ledger.db.reserve");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
        assert!(!reserve.is_full());
        assert!(reserve.exhausted(), "released");
        assert!(!reserve.exhausted(), "released once");
        assert!(reserve.is_full());
        assert!(!file.exists());
        // The temporary directory's disk has far more than 2 MiB free.
        reserve.try_recover();
        assert!(!reserve.is_full());
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
    }

    #[test]
    fn reserve_size_is_validated() {
        assert_eq!(reserve_bytes(None), Ok(64 << 20));
        assert_eq!(reserve_bytes(Some(" 8 ")), Ok(8 << 20));
        for bad in ["0", "-1", "65537", "8MB", ""] {
            assert!(reserve_bytes(Some(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
