//! `adxexporter wal stats|list|dead-letters|requeue|purge`: inspect and repair the WAL of a stopped
//! adxexporter (docs/design.md#wal-tool). Docs and JSON fields: `docs/wal.md`.
//!
//! - The store is opened with [`Wal::open_existing`]: nothing is created, migrated or re-targeted,
//!   so `stats`, `list` and `dead-letters` leave it as it was. Only `requeue` and `purge --yes` write.
//! - While another process holds the store (redb's file lock) every subcommand fails with
//!   [`WalError::Locked`]'s message: stop the service first.
//! - A damaged, empty or truncated `wal.redb` fails every subcommand with
//!   [`WalError::CorruptStore`]'s message (the file, the move-aside advice), the verdict `run`
//!   gives on the same file; a panic of redb reading it is reported so too, never as a crash.
//! - Exit codes: 0 done (also `purge` without `--yes`, which only reports), 1 the WAL could not be
//!   opened or changed (message on stderr), 2 bad flags (clap).
//! - Human output is aligned tables; `--json` prints one JSON document whose field names are stable.
//!   Times are RFC 3339 UTC strings (`null` when absent), sizes are bytes.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{WalArgs, WalCommand, WalDeadLettersArgs, WalPurgeArgs, WalSelect, WalStore};
use crate::time::Ticks;
use crate::wal::{
    DeadLetter, DeliveryState, ExporterRef, ListedRecord, PurgeScope, Wal, WalAccess, WalError,
    WalFilter, WalStats, WindowState,
};

/// One-line cells in tables are cut to this many characters (`dead-letters --full` prints all).
const CELL_CHARS: usize = 80;

/// Run one `wal` subcommand; a WAL error is printed and becomes exit code 1.
pub fn run(args: WalArgs) -> anyhow::Result<ExitCode> {
    match execute(args.command) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("adxexporter wal: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Run the subcommand and return what to print on stdout.
pub fn execute(command: WalCommand) -> Result<String, WalError> {
    match command {
        WalCommand::Stats(store) => stats(&store),
        WalCommand::List(select) => list(&select),
        WalCommand::DeadLetters(args) => dead_letters(&args),
        WalCommand::Requeue(select) => requeue(&select),
        WalCommand::Purge(args) => purge(&args),
    }
}

fn open(store: &WalStore, access: WalAccess) -> Result<Wal, WalError> {
    Wal::open_existing(&store.wal_dir, store.wal_max_bytes, access)
}

fn filter_of(select: &WalSelect) -> WalFilter {
    let (namespace, name) = select.exporter.clone().unzip();
    WalFilter {
        output: select.output.clone(),
        exporter_uid: select.uid.clone(),
        namespace,
        name,
        window_start: select.window_start,
    }
}

fn stats(store: &WalStore) -> Result<String, WalError> {
    let wal = open(store, WalAccess::ReadOnly)?;
    let stats = wal.stats()?;
    Ok(if store.json {
        json_text(&stats_json(&wal, &stats))
    } else {
        stats_text(&wal, &stats)
    })
}

fn list(select: &WalSelect) -> Result<String, WalError> {
    let wal = open(&select.store, WalAccess::ReadOnly)?;
    let records = wal.list(&filter_of(select))?;
    Ok(if select.store.json {
        json_text(&json!({
            "wal": wal.path().display().to_string(),
            "records": records.iter().map(record_json).collect::<Vec<_>>(),
        }))
    } else {
        list_text(&records)
    })
}

fn dead_letters(args: &WalDeadLettersArgs) -> Result<String, WalError> {
    let wal = open(&args.select.store, WalAccess::ReadOnly)?;
    let letters = wal.dead_letters(&filter_of(&args.select))?;
    Ok(if args.select.store.json {
        json_text(&json!({
            "wal": wal.path().display().to_string(),
            "dead_letters": letters.iter().map(dead_letter_json).collect::<Vec<_>>(),
        }))
    } else if args.full {
        dead_letters_full(&letters)
    } else {
        dead_letters_table(&letters)
    })
}

fn requeue(select: &WalSelect) -> Result<String, WalError> {
    let wal = open(&select.store, WalAccess::ReadWrite)?;
    let filter = filter_of(select);
    let letters = wal.dead_letters(&filter)?;
    let requeued = wal.requeue(&filter)?;
    Ok(if select.store.json {
        json_text(&json!({
            "wal": wal.path().display().to_string(),
            "requeued": requeued,
            "entries": letters.iter().map(|l| entry_json(&l.output, &l.header.exporter, l.header.window_start, "dead_lettered")).collect::<Vec<_>>(),
        }))
    } else {
        let mut out = entries_table(letters.iter().map(|l| {
            (
                &l.output,
                &l.header.exporter,
                l.header.window_start,
                "dead-lettered",
            )
        }));
        let _ = writeln!(
            out,
            "requeued {requeued} dead letter(s): pending again, delivered when adxexporter runs with that output configured"
        );
        out
    })
}

fn purge(args: &WalPurgeArgs) -> Result<String, WalError> {
    let scope = if args.all {
        PurgeScope::All
    } else if args.pending {
        PurgeScope::Pending
    } else {
        PurgeScope::DeadLetters
    };
    let access = if args.yes {
        WalAccess::ReadWrite
    } else {
        WalAccess::ReadOnly
    };
    let wal = open(&args.select.store, access)?;
    let filter = filter_of(&args.select);
    let entries = purge_entries(&wal, &filter, scope)?;
    let purged = if args.yes {
        Some(wal.purge(&filter, scope)?)
    } else {
        None
    };
    Ok(if args.select.store.json {
        json_text(&json!({
            "wal": wal.path().display().to_string(),
            "scope": scope_name(scope),
            "confirmed": args.yes,
            "matched": entries.len(),
            "purged": purged.unwrap_or(0),
            "entries": entries.iter().map(|(o, e, w, s)| entry_json(o, e, *w, s)).collect::<Vec<_>>(),
        }))
    } else {
        let mut out = entries_table(entries.iter().map(|(o, e, w, s)| {
            (
                o,
                e,
                *w,
                if *s == "pending" {
                    "pending"
                } else {
                    "dead-lettered"
                },
            )
        }));
        let _ = match purged {
            Some(n) => writeln!(out, "purged {n} entr{}", plural_y(n)),
            None => writeln!(
                out,
                "would purge {} entr{} ({}); nothing changed: add --yes to purge",
                entries.len(),
                plural_y(entries.len()),
                scope_name(scope)
            ),
        };
        out
    })
}

/// (output, exporter, window start, state) of every entry `purge` would drop.
fn purge_entries(
    wal: &Wal,
    filter: &WalFilter,
    scope: PurgeScope,
) -> Result<Vec<(String, ExporterRef, Ticks, &'static str)>, WalError> {
    let mut out = Vec::new();
    if matches!(scope, PurgeScope::DeadLetters | PurgeScope::All) {
        for l in wal.dead_letters(filter)? {
            out.push((
                l.output,
                l.header.exporter,
                l.header.window_start,
                "dead_lettered",
            ));
        }
    }
    if matches!(scope, PurgeScope::Pending | PurgeScope::All) {
        for r in wal.list(filter)? {
            for (output, state) in r.deliveries {
                if matches!(state, DeliveryState::Pending { .. }) {
                    out.push((
                        output,
                        r.header.exporter.clone(),
                        r.header.window_start,
                        "pending",
                    ));
                }
            }
        }
    }
    Ok(out)
}

fn scope_name(scope: PurgeScope) -> &'static str {
    match scope {
        PurgeScope::DeadLetters => "dead_letters",
        PurgeScope::Pending => "pending",
        PurgeScope::All => "all",
    }
}

fn plural_y(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

// ---------------------------------------------------------------------------------------------
// Human output

fn stats_text(wal: &Wal, s: &WalStats) -> String {
    let mut out = table(
        &["WAL", &wal.path().display().to_string()],
        vec![
            row(["records", &s.records.to_string()]),
            row([
                "used bytes",
                &format!(
                    "{} of {} ({})",
                    s.used_bytes,
                    s.max_bytes,
                    percent(s.used_bytes, s.max_bytes)
                ),
            ]),
            row(["file bytes", &s.file_bytes.to_string()]),
            row(["dead letters", &s.dead_letters.to_string()]),
        ],
    );
    out.push('\n');
    out.push_str(&table(
        &["EXPORTER", "UID", "WATERMARK", "RECORDS", "OLDEST WINDOW"],
        s.exporters
            .iter()
            .map(|e| {
                let name = format!(
                    "{}/{}{}",
                    e.namespace,
                    e.name,
                    if e.forgotten { " (deleted)" } else { "" }
                );
                row([
                    &name,
                    &e.uid,
                    &time(e.watermark),
                    &e.records.to_string(),
                    &time(e.oldest_window),
                ])
            })
            .collect(),
    ));
    out.push('\n');
    out.push_str(&table(
        &[
            "OUTPUT",
            "PENDING",
            "OLDEST PENDING",
            "NEXT ATTEMPT",
            "DEAD LETTERS",
        ],
        s.outputs
            .iter()
            .map(|o| {
                row([
                    &o.output,
                    &o.pending.to_string(),
                    &time(o.oldest_pending),
                    &next_attempt_text(o.pending, o.next_attempt_at),
                    &o.dead_letters.to_string(),
                ])
            })
            .collect(),
    ));
    out
}

fn list_text(records: &[ListedRecord]) -> String {
    table(
        &[
            "EXPORTER",
            "UID",
            "WINDOW START",
            "WINDOW END",
            "STATE",
            "BYTES",
            "OUTPUTS",
        ],
        records
            .iter()
            .map(|r| {
                let deliveries = r
                    .deliveries
                    .iter()
                    .map(|(output, state)| format!("{output}={}", delivery_text(state)))
                    .collect::<Vec<_>>()
                    .join(" ");
                row([
                    &exporter_name(&r.header.exporter),
                    &r.header.exporter.uid,
                    &r.header.window_start.to_string(),
                    &r.header.window_end.to_string(),
                    window_state_text(r.state),
                    &r.payload_bytes.to_string(),
                    &deliveries,
                ])
            })
            .collect(),
    )
}

fn window_state_text(state: WindowState) -> &'static str {
    match state {
        WindowState::Pending => "pending",
        WindowState::DeadLettered => "dead-lettered",
    }
}

fn delivery_text(state: &DeliveryState) -> String {
    match state {
        DeliveryState::Pending { attempts: 0, .. } => "pending".to_string(),
        DeliveryState::Pending {
            attempts,
            next_attempt_at,
            ..
        } => format!("pending(attempts={attempts},next={next_attempt_at})"),
        DeliveryState::Acked => "acked".to_string(),
        DeliveryState::DeadLettered { attempts, .. } => {
            format!("dead-lettered(attempts={attempts})")
        }
    }
}

fn dead_letters_table(letters: &[DeadLetter]) -> String {
    table(
        &[
            "OUTPUT",
            "EXPORTER",
            "WINDOW START",
            "ATTEMPTS",
            "REASON",
            "BODY",
        ],
        letters
            .iter()
            .map(|l| {
                row([
                    &l.output,
                    &exporter_name(&l.header.exporter),
                    &l.header.window_start.to_string(),
                    &l.attempts.to_string(),
                    &one_line(&l.reason, CELL_CHARS),
                    &one_line(&l.body, CELL_CHARS),
                ])
            })
            .collect(),
    )
}

fn dead_letters_full(letters: &[DeadLetter]) -> String {
    let mut out = String::new();
    for l in letters {
        let _ = writeln!(out, "output:           {}", l.output);
        let _ = writeln!(
            out,
            "exporter:         {} (uid {}, generation {})",
            exporter_name(&l.header.exporter),
            l.header.exporter.uid,
            l.header.generation
        );
        let _ = writeln!(
            out,
            "window:           [{}, {})",
            l.header.window_start, l.header.window_end
        );
        let _ = writeln!(out, "attempts:         {}", l.attempts);
        let _ = writeln!(out, "dead-lettered at: {}", l.at);
        let _ = writeln!(out, "payload bytes:    {}", l.payload_bytes);
        let _ = writeln!(out, "reason:           {}", l.reason);
        let _ = writeln!(out, "body:\n{}\n", l.body);
    }
    out
}

fn entries_table<'a>(
    entries: impl Iterator<Item = (&'a String, &'a ExporterRef, Ticks, &'a str)>,
) -> String {
    table(
        &["OUTPUT", "EXPORTER", "UID", "WINDOW START", "STATE"],
        entries
            .map(|(output, exporter, window, state)| {
                row([
                    output,
                    &exporter_name(exporter),
                    &exporter.uid,
                    &window.to_string(),
                    state,
                ])
            })
            .collect(),
    )
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = headers.iter().map(|h| h.to_string()).collect::<Vec<_>>();
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(&widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Control characters (newlines) become spaces; longer text is cut to `max` characters with `…`.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= max {
        return flat.to_string();
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A pending row that never failed is due at once (stored as tick 0): `None` then.
fn scheduled(next_attempt_at: Option<Ticks>) -> Option<Ticks> {
    next_attempt_at.filter(|t| t.0 > 0)
}

fn next_attempt_text(pending: u64, next_attempt_at: Option<Ticks>) -> String {
    match scheduled(next_attempt_at) {
        Some(t) => t.to_string(),
        None if pending > 0 => "now".to_string(),
        None => "-".to_string(),
    }
}

fn time(t: Option<Ticks>) -> String {
    t.map_or_else(|| "-".to_string(), |t| t.to_string())
}

fn percent(used: u64, max: u64) -> String {
    if max == 0 {
        return "-".to_string();
    }
    format!("{:.1}%", used as f64 * 100.0 / max as f64)
}

fn exporter_name(e: &ExporterRef) -> String {
    format!("{}/{}", e.namespace, e.name)
}

// ---------------------------------------------------------------------------------------------
// JSON output (field names documented in docs/wal.md; keep them stable)

fn json_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{e}"));
    text.push('\n');
    text
}

fn json_time(t: Option<Ticks>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn exporter_json(e: &ExporterRef) -> Value {
    json!({"uid": e.uid, "namespace": e.namespace, "name": e.name})
}

fn stats_json(wal: &Wal, s: &WalStats) -> Value {
    json!({
        "wal": wal.path().display().to_string(),
        "records": s.records,
        "used_bytes": s.used_bytes,
        "max_bytes": s.max_bytes,
        "file_bytes": s.file_bytes,
        "dead_letters": s.dead_letters,
        "exporters": s.exporters.iter().map(|e| json!({
            "uid": e.uid,
            "namespace": e.namespace,
            "name": e.name,
            "watermark": json_time(e.watermark),
            "forgotten": e.forgotten,
            "records": e.records,
            "oldest_window": json_time(e.oldest_window),
        })).collect::<Vec<_>>(),
        "outputs": s.outputs.iter().map(|o| json!({
            "output": o.output,
            "pending": o.pending,
            "oldest_pending": json_time(o.oldest_pending),
            "next_attempt_at": json_time(scheduled(o.next_attempt_at)),
            "dead_letters": o.dead_letters,
        })).collect::<Vec<_>>(),
    })
}

fn record_json(r: &ListedRecord) -> Value {
    json!({
        "exporter": exporter_json(&r.header.exporter),
        "generation": r.header.generation,
        "window_start": r.header.window_start.to_string(),
        "window_end": r.header.window_end.to_string(),
        "created": r.header.created.to_string(),
        "state": match r.state {
            WindowState::Pending => "pending",
            WindowState::DeadLettered => "dead_lettered",
        },
        "payload_bytes": r.payload_bytes,
        "deliveries": r.deliveries.iter().map(|(output, state)| delivery_json(output, state)).collect::<Vec<_>>(),
    })
}

fn delivery_json(output: &str, state: &DeliveryState) -> Value {
    match state {
        DeliveryState::Pending {
            attempts,
            next_attempt_at,
            last_error,
        } => json!({
            "output": output,
            "state": "pending",
            "attempts": attempts,
            "next_attempt_at": json_time(scheduled(Some(*next_attempt_at))),
            "last_error": last_error,
        }),
        DeliveryState::Acked => json!({"output": output, "state": "acked"}),
        DeliveryState::DeadLettered { reason, attempts } => json!({
            "output": output,
            "state": "dead_lettered",
            "reason": reason,
            "attempts": attempts,
        }),
    }
}

fn dead_letter_json(l: &DeadLetter) -> Value {
    json!({
        "output": l.output,
        "exporter": exporter_json(&l.header.exporter),
        "generation": l.header.generation,
        "window_start": l.header.window_start.to_string(),
        "window_end": l.header.window_end.to_string(),
        "attempts": l.attempts,
        "dead_lettered_at": l.at.to_string(),
        "reason": l.reason,
        "body": l.body,
        "payload_bytes": l.payload_bytes,
    })
}

fn entry_json(output: &str, exporter: &ExporterRef, window_start: Ticks, state: &str) -> Value {
    json!({
        "output": output,
        "exporter": exporter_json(exporter),
        "window_start": window_start.to_string(),
        "state": state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_leaves_no_trailing_space() {
        let text = table(
            &["A", "LONG HEADER", "C"],
            vec![row(["wide cell", "x", ""]), row(["y", "z", "last"])],
        );
        assert_eq!(
            text,
            "A          LONG HEADER  C\nwide cell  x\ny          z            last\n"
        );
    }

    #[test]
    fn one_line_flattens_and_truncates() {
        assert_eq!(one_line("a\nb\r\n", 10), "a b");
        assert_eq!(one_line("abcdefgh", 5), "abcd…");
        assert_eq!(one_line("äöü", 3), "äöü");
    }
}
