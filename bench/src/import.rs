//! `kokuho-ledger import` of 10 events per person, run as users run it (its own process, peak
//! memory measured), against a plain batched INSERT of the same rows in the same run; then how
//! long `kokuho-ledger serve` takes to be ready on what the import left, and how fast
//! PostgreSQL writes those rows alone (the floor under any import on the machine).

use anyhow::Context as _;
use kokuho_ledger::store::Store;
use kokuho_testing::{process, TestDb};

use crate::support::{product_binary, timed, write_import_file, PLAIN_TABLE};

pub async fn run(db: &TestDb, persons: usize, batch_lines: usize) -> anyhow::Result<()> {
    let url = db.url.as_str();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, 0..persons)?;
    let bin = product_binary()?;
    let (secs, rss, said) = timed(
        std::process::Command::new(&bin)
            .arg("import")
            .arg(&file)
            .args(["--database-url", url, "--batch-size", &batch_lines.to_string()])
            .env("KOKUHO_VAULT_KEY_FILE", process::vault_key(dir.path()))
            .env("KOKUHO_AUDIT_KEY_FILE", process::audit_key(dir.path()))
            .env("KOKUHO_INSURER_NUMBER", "131999")
            // BENCH_IMPORT_LOG: the import's own log filter, e.g. `kokuho_ledger::import=debug`
            // for each batch's decide and write times (to stderr).
            .env(
                "RUST_LOG",
                std::env::var("BENCH_IMPORT_LOG").unwrap_or_else(|_| "warn".into()),
            ),
    )?;
    let store = Store::connect(url).await?;
    let n = store.head().await?;
    println!("import: {}", said.trim());
    println!(
        "  end to end, own process (parse, check, write, read models and feed caught up): {secs:.1} s, \
         {:.0} events/s over {n} events; peak RSS {:.0} MiB",
        n as f64 / secs,
        rss as f64 / 1024.0
    );

    let (listening, ready, behind) = serve_ready(db, dir.path())?;
    println!(
        "  `serve` on the imported database: listening {listening:.2} s after its start, /readyz 200 after {ready:.2} s \
         (events its projections, feed and audit chain still had to apply then: {behind})"
    );

    // Baseline: the same rows into a plain table, batches of the same size, one commit each.
    let pool = store
        .pg_pool()
        .context("the import benchmark needs PostgreSQL")?
        .clone();
    sqlx::query(PLAIN_TABLE).execute(&pool).await?;
    let rows = store.read_log(0, i64::MAX).await?;
    let started = std::time::Instant::now();
    let per_batch = batch_lines * 12 / 10;
    for chunk in rows.chunks(per_batch.max(1)) {
        let mut c: [Vec<String>; 6] = Default::default();
        let (mut seqs, mut pos) = (Vec::new(), Vec::new());
        for r in chunk {
            c[0].push(r.aggregate_type.clone());
            c[1].push(r.aggregate_id.clone());
            c[2].push(r.event_type.clone());
            c[3].push(r.event_version.clone());
            c[4].push(serde_json::to_string(&r.payload)?);
            c[5].push(serde_json::to_string(&r.metadata)?);
            seqs.push(r.sequence);
            pos.push(r.position);
        }
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO bench_plain SELECT pos, t, i, s, et, ev, p::json, m::json, now() FROM \
             UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[]) \
             AS u(t, i, s, et, ev, p, m, pos)",
        )
        .bind(&c[0])
        .bind(&c[1])
        .bind(&seqs)
        .bind(&c[2])
        .bind(&c[3])
        .bind(&c[4])
        .bind(&c[5])
        .bind(&pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let plain = rows.len() as f64 / started.elapsed().as_secs_f64();
    println!("  plain batched INSERT of the same rows: {plain:.0} rows/s");
    println!("  ratio (end to end / plain): {:.2}", n as f64 / secs / plain);

    let each = rows_alone(&pool).await?;
    let (rows, tables) = (each.iter().map(|e| e.1).sum::<i64>(), each.len());
    let floor: f64 = each.iter().map(|e| e.2).sum();
    println!(
        "  the rows the import left alone ({rows} rows in {tables} tables, {:.1} per event), copied by PostgreSQL itself \
         into empty tables with the same indexes, one statement per table, one session: {floor:.1} s, {:.0} events/s",
        rows as f64 / n as f64,
        n as f64 / floor
    );
    println!(
        "  ratio (end to end / the rows alone): {:.2}; the rows alone need {:.0} µs of one core per event",
        floor / secs,
        floor * 1e6 / n as f64
    );
    let largest: Vec<String> = each
        .iter()
        .take(5)
        .map(|(t, r, s)| format!("{t} {r} rows {s:.1} s"))
        .collect();
    println!("  of which: {}", largest.join(", "));
    store.close().await;
    Ok(())
}

/// Every row the ledger's tables hold, written again by the server itself (`INSERT … SELECT`
/// into a `LIKE … INCLUDING ALL` copy: same columns and indexes, no client, no parsing, no
/// network), one table after another, with the commits: each table's rows and seconds, slowest
/// first. What an import writes cannot be written faster than this on the same server from one
/// session.
async fn rows_alone(pool: &sqlx::PgPool) -> anyhow::Result<Vec<(String, i64, f64)>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_type = 'BASE TABLE' AND table_name NOT IN ('bench_plain', '_sqlx_migrations') ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let mut each = Vec::new();
    for t in &tables {
        let copy = format!("floor_{t}");
        sqlx::query(&format!("CREATE TABLE {copy} (LIKE {t} INCLUDING ALL)"))
            .execute(pool)
            .await?;
        let started = std::time::Instant::now();
        let rows = sqlx::query(&format!("INSERT INTO {copy} SELECT * FROM {t}"))
            .execute(pool)
            .await?
            .rows_affected() as i64;
        each.push((t.clone(), rows, started.elapsed().as_secs_f64()));
        sqlx::query(&format!("DROP TABLE {copy}")).execute(pool).await?;
    }
    each.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(each)
}

/// Starts `serve` on the database (with the keys the import used) and times, from its start,
/// its listening and its first `/readyz` 200 (every projection, the feed and the audit chain
/// caught up, api.md), with the events they were still behind then (summed).
fn serve_ready(db: &TestDb, dir: &std::path::Path) -> anyhow::Result<(f64, f64, i64)> {
    // The testing crate's server and requests block: off the runtime's task queue.
    tokio::task::block_in_place(|| {
        let started = std::time::Instant::now();
        let server = process::start_bare(db, dir);
        let listening = started.elapsed().as_secs_f64();
        let answer = loop {
            let (status, body) = process::http_text(&server.addr, "/readyz");
            if status == 200 {
                break (started.elapsed().as_secs_f64(), body);
            }
            anyhow::ensure!(started.elapsed().as_secs() < 600, "not ready after 600 s: {body}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        process::stop(server);
        let (ready, body) = answer;
        let body: serde_json::Value = serde_json::from_str(&body)?;
        let projections = body["projections"].as_array().context("no projections in /readyz")?;
        let behind = projections.iter().filter_map(|p| p["lag_events"].as_i64()).sum();
        Ok((listening, ready, behind))
    })
}
