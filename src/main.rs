use std::process::ExitCode;

// Many small short-lived allocations per request (JSON, rows, headers): glibc malloc was an
// eighth of the server's CPU under load (perf), mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // clap exits with 2 on bad usage by itself.
    let cli = kokuho_ledger::cli::parse();
    kokuho_ledger::cli::init_tracing();
    match kokuho_ledger::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
