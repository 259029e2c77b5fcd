//! `adxexporter preview` (placeholder until the query and transform are wired in).

/// Runs one window of one resource and prints its samples.
pub async fn run(_args: crate::cli::PreviewArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("preview is being wired")
}
