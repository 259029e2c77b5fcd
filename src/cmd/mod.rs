//! The subcommands other than `run`, each a function from its parsed arguments to an exit code:
//! `check` (validate resources, offline or also against Kusto), `crd` (print the CRD), `preview`
//! (one window against Kusto or a saved response, nothing pushed) and `wal` (inspect and repair a
//! stopped instance's WAL). `run` is [`crate::app`].

pub mod check;
mod check_online;
pub mod preview;
pub mod wal;

use std::process::ExitCode;

/// `adxexporter crd`: the CustomResourceDefinition as YAML on stdout.
pub fn crd() -> anyhow::Result<ExitCode> {
    print!("{}", crate::crd::crd_yaml()?);
    Ok(ExitCode::SUCCESS)
}

/// What `preview` and `check` say before they query a Kusto whose certificate is not verified.
fn warn_if_unverified(kusto: &crate::cli::KustoSettings) {
    if kusto.config.tls.insecure_skip_verify {
        eprintln!(
            "warning: --tls-insecure-skip-verify: the Kusto server certificate is NOT verified"
        );
    }
}

/// A resource's query limits as `preview` and `check` apply them: its `spec.maxRows`, the default
/// byte limit.
fn resource_limits(spec: &crate::crd::ValidatedSpec) -> crate::query::QueryLimits {
    crate::query::QueryLimits {
        max_rows: usize::try_from(spec.max_rows).unwrap_or(usize::MAX),
        ..crate::query::QueryLimits::default()
    }
}
