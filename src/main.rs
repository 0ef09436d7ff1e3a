//! The `patchgate` binary: parses the command line and runs it.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = patchgate::cli::Cli::parse();
    match patchgate::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(step) = patchgate::cli::next_step(&e) {
                eprintln!("hint: {step}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
