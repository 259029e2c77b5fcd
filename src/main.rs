//! The `adxexporter` binary: parse flags, dispatch to a subcommand. No logic of its own.
use std::process::ExitCode;

use adxexporter::cli::Command;
use adxexporter::cmd;

fn main() -> ExitCode {
    // Before the runtime's threads exist.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    keep_window_buffers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(dispatch()),
        Err(e) => {
            eprintln!("adxexporter: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch() -> ExitCode {
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

/// Lets glibc keep the buffers of one window for the next. With its defaults a window's buffers
/// (response chunks, rows, series, the encoded request: a few MiB each) were mapped fresh and
/// unmapped or trimmed again every window, and the page faults and zeroing took ~17 % of the push
/// path's CPU (benches/README.md#durable-push). Allocations up to 32 MiB now come from the heap and
/// up to 64 MiB of free heap top stay mapped; what a big window frees is still given back at once
/// by `trim_heap` (query::budget, windows of 32 MiB and more).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_window_buffers() {
    const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: glibc's mallopt only sets allocator tunables, under its own lock; called before any
    // other thread of ours exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
    }
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
