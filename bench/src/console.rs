//! The staff console's person page (issue 13): the page with its timeline chart for persons
//! with 50 events, requested by 20 concurrent staff sessions (session cookies, as browsers
//! send them) on a ledger of generated persons, against the JSON timeline of the same persons
//! from the same number of connections in the same run; and the page's weight.

use std::time::{Duration, Instant};

use kokuho_ledger::access::{Principal, Role, Source};
use kokuho_ledger::domain::PersonId;
use kokuho_ledger::request::RequestContext;
use serde_json::json;

use crate::support::{import, ledger, percentiles, person_id, serve, write_import_file, Conn, Served};

/// Persons given 50 events (the first ones of the generated ledger).
const HEAVY: usize = 20;

async fn load(
    addr: &Served,
    credentials: &[String],
    paths: &[String],
    seconds: u64,
) -> anyhow::Result<(Vec<Duration>, f64, usize)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (c, credential) in credentials.iter().enumerate() {
        let (addr, credential, paths) = (addr.clone(), credential.clone(), paths.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open_with(&addr, credential).await?;
            let (mut lat, mut bytes) = (Vec::new(), 0);
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let (status, len) = conn.get(&paths[i % paths.len()]).await?;
                anyhow::ensure!(status == 200, "status {status}");
                lat.push(t.elapsed());
                bytes = len;
                i += 1;
            }
            anyhow::Ok((lat, bytes))
        }));
    }
    let started = Instant::now();
    let (mut all, mut bytes) = (Vec::new(), 0);
    for t in tasks {
        let (lat, b) = t.await??;
        all.extend(lat);
        bytes = b;
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((all, rate, bytes))
}

pub async fn run(url: &str, persons: usize, sessions: usize, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.jsonl");
    write_import_file(&file, 0..persons)?;
    let app = ledger(url, None).await?;
    import(&app.ledger, &file).await?;
    // Each generated person has 10 events; the first HEAVY get 40 more (50 in all).
    let ctx = RequestContext {
        actor: "bench".into(),
        ..Default::default()
    };
    for i in 0..HEAVY.min(persons) {
        let id = PersonId::parse(&person_id(i))?;
        for k in 0..40u64 {
            let d = chrono::NaiveDate::from_ymd_opt(2019, 2, 1).unwrap() + chrono::Days::new(k * 40);
            let body =
                json!({"type": "document_collected", "effective_date": d.to_string(), "reported_date": d.to_string()});
            app.ledger.record_person_event(&id, &body, &ctx).await?;
        }
    }
    app.ledger.projections().catch_up().await?;
    let served = serve(&app).await?;

    // One staff session per connection, as the console's sign-in opens them.
    let mut cookies = Vec::new();
    for s in 0..sessions {
        let principal = Principal::new(
            format!("bench-clerk-{s}"),
            vec![Role::Clerk],
            &app.access.roles,
            Source::Token,
        );
        let value = app
            .access
            .sessions
            .open(&principal, "127.0.0.1", chrono::Utc::now())
            .await?;
        cookies.push(format!("Cookie: kokuho_session={value}"));
    }
    let bearer = vec![format!("Authorization: Bearer {}", served.token); sessions];
    let heavy: Vec<String> = (0..HEAVY.min(persons)).map(person_id).collect();
    let pages: Vec<String> = heavy.iter().map(|p| format!("/console/persons/{p}")).collect();
    let json: Vec<String> = heavy.iter().map(|p| format!("/v1/persons/{p}/timeline")).collect();

    // Alternating rounds, so that drift of the machine falls on both alike.
    let (mut page_lat, mut json_lat, mut page_rates, mut json_rates) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut page_bytes, mut json_bytes) = (0, 0);
    for _ in 0..2 {
        let (lat, rate, bytes) = load(&served, &bearer, &json, seconds).await?;
        json_lat.extend(lat);
        json_rates.push(rate);
        json_bytes = bytes;
        let (lat, rate, bytes) = load(&served, &cookies, &pages, seconds).await?;
        page_lat.extend(lat);
        page_rates.push(rate);
        page_bytes = bytes;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (pp50, pp99, pmax) = percentiles(page_lat);
    let (jp50, jp99, jmax) = percentiles(json_lat);
    println!("{persons} persons; person pages of persons with 50 events; {sessions} concurrent sessions; 2 x {seconds} s each");
    println!(
        "console person page (chart + event list, session cookie): p50 {pp50:?}, p99 {pp99:?}, max {pmax:?}, {:.0} pages/s",
        mean(&page_rates)
    );
    println!(
        "baseline JSON timeline of the same persons (bearer): p50 {jp50:?}, p99 {jp99:?}, max {jmax:?}, {:.0} req/s",
        mean(&json_rates)
    );
    println!(
        "ratio page/JSON: throughput {:.2}, p50 {:.2}x",
        mean(&page_rates) / mean(&json_rates),
        pp50.as_secs_f64() / jp50.as_secs_f64()
    );
    let css = include_str!("../../static/console.css").len();
    let js = include_str!("../../static/console.js").len();
    println!(
        "page weight: HTML {page_bytes} B + CSS {css} B + script {js} B = {} B (JSON timeline {json_bytes} B); no images, no fonts",
        page_bytes + css + js
    );
    app.ledger.store().close().await;
    Ok(())
}
