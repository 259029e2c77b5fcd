//! `adxexporter check FILE…`: validates resources offline, one line per resource or problem.

use std::process::ExitCode;

use crate::cli::CheckArgs;
use crate::crd::{CheckReport, check_text};

/// Exit 0 when every resource is valid, 1 when any problem was found.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let labels = args.labels()?;
    let mut failed = false;
    for path in &args.files {
        let name = path.display().to_string();
        let report = match std::fs::read_to_string(path) {
            Ok(text) => check_text(&name, &text, labels.as_ref()),
            Err(e) => CheckReport {
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
