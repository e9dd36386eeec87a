//! The access log written by several processes at once: each recorder (one per process)
//! chains from the head it last wrote, and must notice when another process has moved it.
//! Two recorders on separate connection pools interleave batches; the log must stay gapless,
//! every record chained, and every acknowledged record present with the id it was given.

use kokuho_testing as common;
#[allow(unused_imports)]
use kokuho_testing::on_both;

use common::TestDb;
use kokuho_ledger::access::log;
use kokuho_ledger::access::recorder::Recorder;
use kokuho_ledger::access::{AccessKind, AccessRecord};

fn record(writer: usize, n: usize) -> AccessRecord {
    let mut r = AccessRecord::new(
        common::test_now(),
        &format!("clerk{writer}"),
        AccessKind::Inquiry,
        "timeline",
    );
    r.persons = vec![format!("{}", 1000 + n % 7)];
    r.request_id = format!("w{writer}-{n}");
    r.outcome = 200;
    r
}

on_both!(two_processes_keep_one_gapless_chain, |kind| async move {
    let db = TestDb::new(kind).await;
    // Separate pools: as separate processes would hold.
    let (a, b) = (db.store().await, db.store().await);
    let (ra, _ta) = Recorder::spawn(a.db().clone());
    let (rb, _tb) = Recorder::spawn(b.db().clone());
    let mut tasks = Vec::new();
    for w in 0..8 {
        let recorder = if w % 2 == 0 { ra.clone() } else { rb.clone() };
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..60 {
                ids.push((format!("w{w}-{n}"), recorder.record(record(w, n)).await.unwrap()));
            }
            ids
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let verified = log::verify(a.db()).await.unwrap();
    assert_eq!((verified.records, verified.last_id), (480, 480));
    let filter = log::Filter {
        limit: 1000,
        ..Default::default()
    };
    let stored = log::list(a.db(), &filter).await.unwrap();
    for (request_id, id) in &acknowledged {
        let r = stored
            .iter()
            .find(|r| r.id == *id)
            .expect("an acknowledged record is stored");
        assert_eq!(&r.request_id, request_id, "record {id}");
    }
    let mut ids: Vec<i64> = acknowledged.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=480).collect::<Vec<_>>());
    db.cleanup().await;
});
