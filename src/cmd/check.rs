//! `adxexporter check FILE|DIR…`: validates resources offline, one line per resource or problem.
//! A directory is read as `run --manifests DIR` reads it ([`manifest_files`]: every `*.yaml`,
//! `*.yml`, `*.json` file directly in it); the first line says which files that was, and each path
//! with such a name that is not read is a problem. The same `namespace/name` twice, in any of the
//! files, is a problem too ([`Checker`]). With `--kusto-endpoint`, each file's lines are followed by
//! those of its valid resources' queries against Kusto ([`OnlineCheck`]).

use std::path::Path;
use std::process::ExitCode;

use super::check_online::OnlineCheck;
use crate::cli::CheckArgs;
use crate::crd::{CheckReport, Checker};
use crate::source::manifests::manifest_files;

/// Exit 0 when every resource is valid, 1 when any problem was found.
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let labels = args.labels()?;
    let mut online = (args.online()?).map(|settings| {
        super::warn_if_unverified(&settings);
        OnlineCheck::new(settings, labels.clone().unwrap_or_default())
    });
    let mut checker = Checker::new(labels.as_ref());
    let mut failed = false;
    for path in &args.files {
        let reports = if path.is_dir() {
            check_dir(&mut checker, path)
        } else {
            vec![check_file(&mut checker, path)]
        };
        for report in reports {
            // Each file's offline lines, then what its resources' queries returned.
            failed |= print(&report);
            if let Some(online) = &mut online {
                for resource in &report.valid {
                    failed |= print(&online.check(resource).await);
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints the report's lines; true when it holds a problem.
fn print(report: &CheckReport) -> bool {
    for line in (report.ok.iter())
        .chain(&report.warnings)
        .chain(&report.problems)
    {
        println!("{line}");
    }
    !report.problems.is_empty()
}

fn check_file(checker: &mut Checker<'_>, path: &Path) -> CheckReport {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => checker.check_text(&name, &text),
        Err(e) => CheckReport {
            problems: vec![format!("{name}: cannot read: {e}")],
            ..Default::default()
        },
    }
}

/// The directory's own report (which files it holds, what is not read) first, then each file's.
fn check_dir(checker: &mut Checker<'_>, dir: &Path) -> Vec<CheckReport> {
    let name = dir.display().to_string();
    let listing = match manifest_files(dir) {
        Ok(listing) => listing,
        Err(e) => {
            return vec![CheckReport {
                problems: vec![format!("{name}: {e}")],
                ..Default::default()
            }];
        }
    };
    let mut own = CheckReport::default();
    let file_names: Vec<String> = (listing.files.iter())
        .map(|f| {
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if file_names.is_empty() {
        own.problems.push(format!(
            "{name}: no *.yaml, *.yml or *.json file directly in this directory (as `run --manifests` reads it): nothing to check"
        ));
    } else {
        own.ok.push(format!(
            "{name}: reading {} file{} as `run --manifests` would: {}",
            file_names.len(),
            if file_names.len() == 1 { "" } else { "s" },
            file_names.join(", ")
        ));
    }
    for (path, why) in &listing.skipped {
        own.problems
            .push(format!("{}: not read: {why}", path.display()));
    }
    let mut reports = vec![own];
    reports.extend(listing.files.iter().map(|f| check_file(checker, f)));
    reports
}
