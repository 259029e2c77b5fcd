//! The `adxexporter` binary: parse flags, dispatch to a subcommand. No logic of its own.
use std::process::ExitCode;

use adxexporter::cli::Command;
use adxexporter::cmd;

#[tokio::main]
async fn main() -> ExitCode {
    // Before any TLS client exists (Kusto, outputs, token endpoints, the API server).
    adxexporter::tls::install_crypto_provider();
    let result = match adxexporter::cli::parse() {
        Command::Crd => cmd::crd(),
        Command::Check(args) => cmd::check::run(args),
        Command::Preview(args) => cmd::preview::run(args).await,
        Command::Run(args) => run(args).await,
        Command::Wal(args) => cmd::wal::run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("adxexporter: {}", adxexporter::tls::error_chain(e.as_ref()));
        ExitCode::from(2)
    })
}

async fn run(args: adxexporter::cli::RunArgs) -> anyhow::Result<ExitCode> {
    adxexporter::app::run(args.validate()?).await?;
    Ok(ExitCode::SUCCESS)
}
