//! Per-stream command serialisation inside one process: commands on the same stream queue up
//! instead of racing to the same sequence and retrying. (Other processes are still handled by
//! the optimistic check under the log lock.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Locks = Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>;

#[derive(Default, Clone)]
pub struct StreamLocks {
    locks: Locks,
}

pub struct StreamGuard {
    locks: Locks,
    key: String,
    _guard: OwnedMutexGuard<()>,
}

impl StreamLocks {
    pub async fn lock(&self, key: String) -> StreamGuard {
        let m = self
            .locks
            .lock()
            .expect("stream locks")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = m.lock_owned().await;
        StreamGuard {
            locks: self.locks.clone(),
            key,
            _guard: guard,
        }
    }

    pub fn len(&self) -> usize {
        self.locks.lock().expect("stream locks").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut map = self.locks.lock().expect("stream locks");
        // The map and this guard are the only holders: nobody waits, forget the entry.
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) <= 2) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_holder_per_stream_and_entries_are_forgotten() {
        let locks = StreamLocks::default();
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("person/1".into()).await;
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(locks.is_empty());
    }
}
