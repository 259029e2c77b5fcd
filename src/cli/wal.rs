//! The `wal` subcommands' flags (`stats`, `list`, `dead-letters`, `requeue`, `purge`): where the WAL
//! of a stopped `run` is, which entries to act on and how to print. Kept apart from `run`'s flags
//! because they share only `--wal-dir` and `--wal-max-bytes`, and `adxexporter wal` must never read
//! `run`'s other variables.
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse::{parse_exporter_name, parse_size, parse_ticks};
use crate::time::Ticks;

#[derive(Debug, Clone, Args)]
pub struct WalArgs {
    #[command(subcommand)]
    pub command: WalCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum WalCommand {
    /// Backlog: records, bytes, per exporter and per output.
    Stats(WalStore),
    /// One line per record still in the WAL, with each output's delivery state.
    List(WalSelect),
    /// Deliveries an output refused for good: reason and response body.
    DeadLetters(WalDeadLettersArgs),
    /// Make matching dead letters pending again (the service retries them when next started).
    Requeue(WalSelect),
    /// Drop dead letters and/or pending deliveries (that data is not delivered); needs --yes.
    Purge(WalPurgeArgs),
}

/// Where the WAL is and how to print; shared by every `wal` subcommand.
#[derive(Debug, Clone, Args)]
pub struct WalStore {
    /// Directory of the write-ahead log, as given to `run`.
    #[arg(
        long,
        env = "ADXEXPORTER_WAL_DIR",
        default_value = super::DEFAULT_WAL_DIR
    )]
    pub wal_dir: PathBuf,
    /// `run`'s --wal-max-bytes, shown by `stats` as the limit.
    #[arg(long, env = "ADXEXPORTER_WAL_MAX_BYTES", default_value = super::DEFAULT_WAL_MAX_BYTES, value_parser = parse_size)]
    pub wal_max_bytes: u64,
    /// Print one JSON document (fields in docs/wal.md) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The store plus which (output, record) entries to act on; no filter = all.
#[derive(Debug, Clone, Args)]
pub struct WalSelect {
    #[command(flatten)]
    pub store: WalStore,
    /// Only this output (e.g. remote_write, otlp).
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
    /// Only this MetricsExporter, NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_exporter_name)]
    pub exporter: Option<(String, String)>,
    /// Only this exporter uid.
    #[arg(long, value_name = "UID")]
    pub uid: Option<String>,
    /// Only the window starting at this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_ticks)]
    pub window_start: Option<Ticks>,
}

#[derive(Debug, Clone, Args)]
pub struct WalDeadLettersArgs {
    #[command(flatten)]
    pub select: WalSelect,
    /// Print reasons and response bodies in full instead of one truncated line each.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true)))]
pub struct WalPurgeArgs {
    #[command(flatten)]
    pub select: WalSelect,
    /// Drop dead letters.
    #[arg(long, group = "scope")]
    pub dead_letters: bool,
    /// Drop deliveries still pending: that data is never delivered to that output.
    #[arg(long, group = "scope")]
    pub pending: bool,
    /// Drop both dead letters and pending deliveries.
    #[arg(long, group = "scope")]
    pub all: bool,
    /// Really purge; without it, print what would be purged and change nothing.
    #[arg(long)]
    pub yes: bool,
}
