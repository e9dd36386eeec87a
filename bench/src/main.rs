//! Load tool for docs/benchmarks.md. Each figure is measured against a baseline taken in the
//! same run on the same server (a plain INSERT of rows of the same size with the same commit
//! pattern, a bare read of the same rows). Every run works in a fresh PostgreSQL database
//! created on the server of `--admin-url` (or `DATABASE_URL`).
//!
//! Build the product binary beside it: `cargo build --release --workspace`, then
//! `target/release/ledger-bench <what>`.

// The same allocator as the product's binary, so in-process figures match `serve`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access;
mod appends;
mod audit;
mod console;
mod feed;
mod import;
mod long_poll;
mod nats;
mod peers;
mod reads;
mod soak;
mod support;

use clap::{Parser, Subcommand};
use kokuho_testing::TestDb;

#[derive(Parser)]
#[command(about = "Benchmarks of kokuho-ledger, each against a baseline of the same run")]
struct Args {
    /// A PostgreSQL server where the tool may create a database.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    admin_url: String,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Single-event commands from concurrent clients vs plain single-row INSERT commits; over
    /// HTTP also vs the HTTP exchange alone and a request whose only write is its access record.
    Appends {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Send an Idempotency-Key with every command, as production clients do.
        #[arg(long)]
        idempotency: bool,
    },
    /// `kokuho-ledger import` (its own process) of 10 events per person vs a plain batched
    /// INSERT of the same rows; peak memory; the rows it left written again by PostgreSQL alone.
    Import {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        /// Lines per batch.
        #[arg(long, default_value_t = 5_000)]
        batch_size: usize,
    },
    /// Imports N persons (10 events each), rebuilds the read models (vs a bare sequential read
    /// of the log), then reads random timelines over TCP from C clients.
    Projections {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Also an open-loop run at this total rate (requests/s) over the same connections;
        /// latency counts from each request's scheduled time (no coordinated omission).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
    },
    /// Timeline reads with no writes and under concurrent appends, each consistent (the
    /// default) and eventual.
    Consistency {
        #[arg(long, default_value_t = 10_000)]
        persons: usize,
        #[arg(long, default_value_t = 8)]
        readers: usize,
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// End-to-end lag from an acknowledged single-event append to its projection.
    Lag {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Imports N persons (10 events each) while the change feed runs; then reads the whole feed
    /// over TCP with limit=1000 and exports it as CSV in Shift_JIS and in UTF-8.
    Feed {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        /// Records per export run (the first N of the feed).
        #[arg(long, default_value_t = 1_000_000)]
        export_records: usize,
    },
    /// The audit trail: appends with and without the chainer; chaining and verification rates.
    Audit {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What access recording costs: timeline reads and single-event appends over HTTP with
    /// access records vs the same through a recorder that writes nothing; record size.
    Access {
        #[arg(long, default_value_t = 20_000)]
        persons: usize,
        /// Reading connections.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Appending connections.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The console's person page (chart, 50 events) at N concurrent staff sessions against
    /// the JSON timeline of the same persons; the page's weight.
    Console {
        #[arg(long, default_value_t = 100_000)]
        persons: usize,
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The NATS JetStream relay: the whole feed of N persons published (vs bare publishes of
    /// the same bodies), append-to-consumer latency, appends with and without the relay.
    Nats {
        /// 10 events and about 27 feed records per person.
        #[arg(long, default_value_t = 37_000)]
        persons: usize,
        /// The JetStream server (a local one: the figures are the relay's, not the network's).
        #[arg(long, env = "KOKUHO_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Appends timed end to end, one at a time.
        #[arg(long, default_value_t = 500)]
        samples: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// A `serve` process under mixed load (appends, reads, feed consumers, an export, audit
    /// verify) for N minutes, its resident memory sampled: the curve, throughput, outcomes.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        #[arg(long, default_value_t = 10)]
        sample_seconds: u64,
        /// Samples before this are warm-up in the memory check (600: past the export's
        /// one-off peak at a quarter of a 30-minute run).
        #[arg(long, default_value_t = 600)]
        warm_up_seconds: u64,
    },
    /// Appends with and without N consumers long-polling the feed over TCP (the shared feed
    /// tail), in the same run.
    LongPoll {
        #[arg(long, default_value_t = 2000)]
        consumers: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Append registrations only (no feed records): the consumers keep waiting, and the
        /// figure is what waiting consumers cost the writers.
        #[arg(long)]
        parked: bool,
    },
    /// Timeline reads of one person with N events through the HTTP router.
    Timeline {
        #[arg(long, default_value_t = 50)]
        events: usize,
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = TestDb::postgres_at(&args.admin_url, "kl_bench").await;
    let url = db.url.clone();
    let result = match args.what {
        What::Appends {
            clients,
            seconds,
            idempotency,
        } => appends::run(&url, clients, seconds, idempotency).await,
        What::Soak {
            minutes,
            sample_seconds,
            warm_up_seconds,
        } => soak::run(&db, minutes, sample_seconds, warm_up_seconds).await,
        What::Import { persons, batch_size } => import::run(&db, persons, batch_size).await,
        What::Timeline {
            events,
            requests,
            clients,
        } => reads::timeline(&url, events, requests, clients).await,
        What::Access {
            persons,
            clients,
            writers,
            seconds,
        } => access::run(&url, persons, clients, writers, seconds).await,
        What::Projections {
            persons,
            clients,
            seconds,
            rate,
        } => reads::projections(&url, persons, clients, seconds, rate).await,
        What::Consistency {
            persons,
            readers,
            writers,
            seconds,
        } => reads::consistency(&url, persons, readers, writers, seconds).await,
        What::Console {
            persons,
            sessions,
            seconds,
        } => console::run(&url, persons, sessions, seconds).await,
        What::LongPoll {
            consumers,
            clients,
            seconds,
            parked,
        } => long_poll::run(&url, consumers, clients, seconds, parked).await,
        What::Lag { clients, seconds } => reads::lag(&url, clients, seconds).await,
        What::Feed {
            persons,
            export_records,
        } => feed::run(&url, persons, export_records).await,
        What::Nats {
            persons,
            nats_url,
            samples,
            clients,
            seconds,
        } => nats::run(&url, &nats_url, persons, samples, clients, seconds).await,
        What::Audit {
            persons,
            clients,
            seconds,
        } => audit::run(&args.admin_url, &url, persons, clients, seconds).await,
    };
    if args.keep {
        eprintln!("kept the database: {url}");
    } else {
        db.cleanup().await;
    }
    result
}
