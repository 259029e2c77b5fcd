//! The `adxexporter` binary: parse flags, dispatch to a subcommand. No logic of its own.
use std::process::ExitCode;

use adxexporter::cli::{CheckArgs, Command, RunArgs};

#[tokio::main]
async fn main() -> ExitCode {
    adxexporter::tls::install_crypto_provider();
    let result = match adxexporter::cli::parse() {
        Command::Crd => crd(),
        Command::Check(args) => check(args),
        Command::Preview(args) => adxexporter::preview::run(args).await,
        Command::Run(args) => run(args).await,
        Command::Wal(args) => adxexporter::waltool::run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("adxexporter: {e:#}");
        ExitCode::from(2)
    })
}

fn crd() -> anyhow::Result<ExitCode> {
    print!("{}", adxexporter::crd::crd_yaml()?);
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 when every resource is valid, 1 when any problem was found.
fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let labels = args.labels()?;
    let mut failed = false;
    for path in &args.files {
        let name = path.display().to_string();
        let report = match std::fs::read_to_string(path) {
            Ok(text) => adxexporter::crd::check_text(&name, &text, labels.as_ref()),
            Err(e) => adxexporter::crd::CheckReport {
                problems: vec![format!("{name}: cannot read: {e}")],
                ..Default::default()
            },
        };
        failed |= !report.problems.is_empty();
        for line in report
            .ok
            .iter()
            .chain(&report.warnings)
            .chain(&report.problems)
        {
            println!("{line}");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    adxexporter::app::run(args.validate()?).await?;
    Ok(ExitCode::SUCCESS)
}
