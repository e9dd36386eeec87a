use std::process::ExitCode;

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
