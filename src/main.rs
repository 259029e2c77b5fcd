//! The `adxexporter` binary: parse flags, dispatch to a subcommand. No logic of its own.
use std::process::ExitCode;

use adxexporter::cli::Command;
use adxexporter::cmd;

#[tokio::main]
async fn main() -> ExitCode {
    // Before any TLS client exists (Kusto, outputs, token endpoints, the API server).
    adxexporter::tls::install_crypto_provider();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    adxexporter::query::budget::set_memory_release(trim_heap);
    let result = match adxexporter::cli::parse() {
        Command::Crd => cmd::crd(),
        Command::Check(args) => cmd::check::run(args).await,
        Command::Preview(args) => cmd::preview::run(args).await,
        Command::Run(args) => run(args).await,
        Command::Wal(args) => cmd::wal::run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("adxexporter: {}", adxexporter::tls::error_chain(e.as_ref()));
        ExitCode::from(2)
    })
}

/// Gives the free pages of every glibc malloc arena back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's malloc_trim takes the arena locks itself and only returns free pages to the
    // kernel (madvise); it never touches memory in use.
    unsafe {
        malloc_trim(0);
    }
}

async fn run(args: adxexporter::cli::RunArgs) -> anyhow::Result<ExitCode> {
    adxexporter::app::run(args.validate()?).await?;
    Ok(ExitCode::SUCCESS)
}
