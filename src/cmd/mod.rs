//! The offline subcommands, each a function from its parsed arguments to an exit code: `check`
//! (validate resources), `crd` (print the CRD), `preview` (one window against Kusto, nothing pushed)
//! and `wal` (inspect and repair a stopped instance's WAL). `run` is [`crate::app`].

pub mod check;
pub mod preview;
pub mod wal;

use std::process::ExitCode;

/// `adxexporter crd`: the CustomResourceDefinition as YAML on stdout.
pub fn crd() -> anyhow::Result<ExitCode> {
    print!("{}", crate::crd::crd_yaml()?);
    Ok(ExitCode::SUCCESS)
}
