//! Window arithmetic and the query text prefix (docs/design.md#windows). Pure: no clock, no IO; "now" is a parameter.
//!
//! - A [`Window`] is half-open `[start, end)` in Kusto ticks. Windows are aligned like KQL `bin()`:
//!   multiples of the interval counted from 0001-01-01T00:00:00Z (Go's `Truncate` does the same, so
//!   windows line up with adx-mon's; for intervals that divide a day this equals Unix alignment).
//! - Only complete windows run: a window is due once `end <= now − ingestionDelay`. A window is
//!   never cut at "now".
//! - First run: the window containing `startTime` if set, else the newest complete window. After
//!   that windows follow the watermark (the exclusive end of the last window written): the next
//!   window is `[watermark, watermark + interval)`.
//! - **Bridge window.** When the watermark is not aligned to the interval (the interval changed, or
//!   the watermark came from adx-mon, whose windows could be cut at the minute), the next window is
//!   the short `[watermark, align_up(watermark))`, so there is neither a gap nor an overlap; every
//!   window after it is aligned and full length.
//! - Catch-up after downtime: [`due_windows`] yields the missed windows oldest first, contiguous.
//! - A non-positive interval (rejected by validation) yields no windows instead of a panic or an
//!   endless loop. Arithmetic saturates at the ends of the `i64` tick range.
//!
//! **Query text** ([`query_text`]): adx-mon's layout byte for byte, one `let` statement per line,
//! each ending in `\n`, then the trimmed body (no blank line between; adx-mon joins the statements
//! with `\n` and appends `\n` + body):
//!
//! ```text
//! let _startTime=datetime(2026-01-01T00:00:00Z);
//! let _endTime=datetime(2026-01-01T00:04:59.9999999Z);
//! let _region="eastus";
//! <body>
//! ```
//!
//! `_endTime` is inclusive (end − 1 tick), so `between(_startTime .. _endTime)` never counts a
//! boundary row twice. Cluster-label keys become KQL identifiers: `_` in front unless the key
//! already starts with `_` (as adx-mon does) and every character outside `[A-Za-z0-9_]` replaced
//! by `_` (`data-classification` → `_data_classification`; adx-mon emitted invalid KQL here).
//! Values are KQL double-quoted string literals escaping `\`, `"`, newline, carriage return and tab;
//! no value can end the literal early. Labels whose identifier would be `_startTime`/`_endTime`
//! are left out (the CLI rejects them, and other control characters, up front).
use std::collections::BTreeMap;
use std::fmt;

pub(crate) use crate::crd::names::WINDOW_VARIABLES;
pub use crate::crd::names::kql_identifier;
use crate::time::{Span, Ticks};

/// A half-open time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: Ticks,
    pub end: Ticks,
}

impl Window {
    pub fn len(&self) -> Span {
        self.end.since(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The inclusive last instant, `end − 1 tick`: the query's `_endTime`.
    pub(crate) fn last_tick(&self) -> Ticks {
        Ticks(self.end.0.saturating_sub(1))
    }

    /// Both edges on the interval's grid and exactly one interval long.
    #[cfg(test)]
    pub(crate) fn is_aligned(&self, interval: Span) -> bool {
        self.len() == interval && align_down(self.start, interval) == self.start
    }

    pub fn contains(&self, t: Ticks) -> bool {
        self.start <= t && t < self.end
    }
}

/// `[2026-01-01T00:00:00Z, 2026-01-01T00:05:00Z)`.
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// Rounds down to a multiple of `interval` counted from 0001-01-01 (KQL `bin()`).
pub(crate) fn align_down(t: Ticks, interval: Span) -> Ticks {
    if interval.0 <= 0 {
        return t;
    }
    Ticks(t.0 - t.0.rem_euclid(interval.0))
}

/// Rounds up to a multiple of `interval` (unchanged when already aligned).
pub(crate) fn align_up(t: Ticks, interval: Span) -> Ticks {
    let down = align_down(t, interval);
    if down == t {
        t
    } else {
        Ticks(down.0.saturating_add(interval.0))
    }
}

/// The newest instant whose data counts as complete: `now − delay`.
pub(crate) fn cutoff(now: Ticks, delay: Span) -> Ticks {
    Ticks(now.0.saturating_sub(delay.0.max(0)))
}

/// The newest window with `end <= now − delay`.
pub(crate) fn newest_complete(now: Ticks, interval: Span, delay: Span) -> Window {
    let end = align_down(cutoff(now, delay), interval);
    Window {
        start: Ticks(end.0.saturating_sub(interval.0.max(0))),
        end,
    }
}

/// The first window of an exporter without a watermark: the window containing `start_time`, or
/// the newest complete window.
pub(crate) fn first_window(
    start_time: Option<Ticks>,
    now: Ticks,
    interval: Span,
    delay: Span,
) -> Window {
    match start_time {
        Some(t) => {
            let start = align_down(t, interval);
            Window {
                start,
                end: Ticks(start.0.saturating_add(interval.0.max(0))),
            }
        }
        None => newest_complete(now, interval, delay),
    }
}

/// The window after `watermark`: `[watermark, watermark + interval)`, or the short bridge
/// `[watermark, align_up(watermark))` when the watermark is off the interval's grid.
pub(crate) fn next_window(watermark: Ticks, interval: Span) -> Window {
    if interval.0 <= 0 {
        return Window {
            start: watermark,
            end: watermark,
        };
    }
    Window {
        start: watermark,
        end: align_up(Ticks(watermark.0.saturating_add(1)), interval).max(watermark),
    }
}

/// Complete and old enough to query: `end <= now − delay` (never capped at now).
pub(crate) fn is_due(window: &Window, now: Ticks, delay: Span) -> bool {
    !window.is_empty() && window.end <= cutoff(now, delay)
}

/// Every due window after `watermark`, oldest first, contiguous (catch-up order).
pub fn due_windows(watermark: Ticks, interval: Span, now: Ticks, delay: Span) -> DueWindows {
    DueWindows {
        next: watermark,
        interval,
        cutoff: cutoff(now, delay),
    }
}

/// Iterator of [`due_windows`].
#[derive(Debug, Clone)]
pub struct DueWindows {
    next: Ticks,
    interval: Span,
    cutoff: Ticks,
}

impl Iterator for DueWindows {
    type Item = Window;

    fn next(&mut self) -> Option<Window> {
        if self.interval.0 <= 0 {
            return None;
        }
        let window = next_window(self.next, self.interval);
        if window.is_empty() || window.end > self.cutoff {
            return None;
        }
        self.next = window.end;
        Some(window)
    }
}

/// A KQL double-quoted string literal holding exactly `value`.
pub(crate) fn kql_string_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The query sent for `window`: the `let` prefix (see the module docs) and the trimmed body.
pub fn query_text(
    window: &Window,
    cluster_labels: &BTreeMap<String, String>,
    body: &str,
) -> String {
    let body = body.trim();
    let mut out = String::with_capacity(96 + body.len() + 32 * cluster_labels.len());
    out.push_str("let _startTime=datetime(");
    out.push_str(&window.start.to_string());
    out.push_str(");\nlet _endTime=datetime(");
    out.push_str(&window.last_tick().to_string());
    out.push_str(");\n");
    for (key, value) in cluster_labels {
        let ident = kql_identifier(key);
        if WINDOW_VARIABLES.contains(&ident.as_str()) {
            continue;
        }
        out.push_str("let ");
        out.push_str(&ident);
        out.push('=');
        out.push_str(&kql_string_literal(value));
        out.push_str(";\n");
    }
    out.push_str(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::TICKS_PER_SECOND;
    use proptest::prelude::*;

    fn t(s: &str) -> Ticks {
        Ticks::parse(s).unwrap()
    }

    fn w(a: &str, b: &str) -> Window {
        Window {
            start: t(a),
            end: t(b),
        }
    }

    const MIN5: Span = Span(300 * TICKS_PER_SECOND);

    #[test]
    fn newest_complete_matches_adx_mon_examples() {
        let now = t("2026-03-01T14:30:45Z");
        assert_eq!(
            newest_complete(now, MIN5, Span::ZERO),
            w("2026-03-01T14:25:00Z", "2026-03-01T14:30:00Z")
        );
        assert_eq!(
            newest_complete(now, Span::from_secs(3600), Span::ZERO),
            w("2026-03-01T13:00:00Z", "2026-03-01T14:00:00Z")
        );
        assert_eq!(
            newest_complete(now, MIN5, Span::from_secs(45)),
            w("2026-03-01T14:25:00Z", "2026-03-01T14:30:00Z")
        );
        assert_eq!(
            newest_complete(now, MIN5, Span::from_secs(46)),
            w("2026-03-01T14:20:00Z", "2026-03-01T14:25:00Z")
        );
    }

    #[test]
    fn alignment_counts_from_year_one_like_go_truncate() {
        // 7m does not divide a day: Go/KQL alignment is 60 s off Unix-epoch alignment
        // (which would give 00:07).
        let seven = Span::from_secs(420);
        assert_eq!(
            align_down(t("1970-01-01T00:10:00Z"), seven),
            t("1970-01-01T00:06:00Z")
        );
        // One week aligns to Monday 00:00.
        assert_eq!(
            align_down(t("2026-11-25T15:00:00Z"), Span::from_secs(7 * 86_400)),
            t("2026-11-23T00:00:00Z")
        );
    }

    #[test]
    fn start_time_picks_the_window_containing_it() {
        let now = t("2026-03-01T14:30:45Z");
        assert_eq!(
            first_window(Some(t("2026-02-01T10:07:00Z")), now, MIN5, Span::ZERO),
            w("2026-02-01T10:05:00Z", "2026-02-01T10:10:00Z")
        );
    }

    #[test]
    fn unaligned_watermark_gets_a_bridge_window() {
        // Interval changed from 5m to 1h: bridge to the next hour, then full hours.
        let wm = t("2026-03-01T14:25:00Z");
        let hour = Span::from_secs(3600);
        assert_eq!(
            next_window(wm, hour),
            w("2026-03-01T14:25:00Z", "2026-03-01T15:00:00Z")
        );
        assert_eq!(
            next_window(t("2026-03-01T15:00:00Z"), hour),
            w("2026-03-01T15:00:00Z", "2026-03-01T16:00:00Z")
        );
    }

    #[test]
    fn a_window_is_due_only_when_complete_after_the_delay() {
        let win = w("2026-03-01T14:25:00Z", "2026-03-01T14:30:00Z");
        assert!(!is_due(&win, t("2026-03-01T14:29:59Z"), Span::ZERO));
        assert!(is_due(&win, t("2026-03-01T14:30:00Z"), Span::ZERO));
        assert!(!is_due(
            &win,
            t("2026-03-01T14:30:59Z"),
            Span::from_secs(60)
        ));
        assert!(is_due(&win, t("2026-03-01T14:31:00Z"), Span::from_secs(60)));
    }

    #[test]
    fn catch_up_runs_missed_windows_oldest_first() {
        let got: Vec<Window> = due_windows(
            t("2026-03-01T14:00:00Z"),
            MIN5,
            t("2026-03-01T14:17:00Z"),
            Span::ZERO,
        )
        .collect();
        assert_eq!(
            got,
            vec![
                w("2026-03-01T14:00:00Z", "2026-03-01T14:05:00Z"),
                w("2026-03-01T14:05:00Z", "2026-03-01T14:10:00Z"),
                w("2026-03-01T14:10:00Z", "2026-03-01T14:15:00Z"),
            ]
        );
    }

    #[test]
    fn non_positive_interval_yields_nothing() {
        assert_eq!(
            due_windows(
                t("2026-01-01T00:00:00Z"),
                Span::ZERO,
                t("2026-02-01T00:00:00Z"),
                Span::ZERO
            )
            .count(),
            0
        );
        assert!(next_window(t("2026-01-01T00:00:00Z"), Span(-5)).is_empty());
    }

    #[test]
    fn query_text_is_byte_exact() {
        let labels = BTreeMap::from([
            ("region".to_string(), "eastus".to_string()),
            ("data-classification".to_string(), "a\"b\\c\nd".to_string()),
        ]);
        let q = query_text(
            &w("2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"),
            &labels,
            "\n  T | where ts between(_startTime .. _endTime)  \n",
        );
        assert_eq!(
            q,
            "let _startTime=datetime(2026-01-01T00:00:00Z);\n\
             let _endTime=datetime(2026-01-01T00:04:59.9999999Z);\n\
             let _data_classification=\"a\\\"b\\\\c\\nd\";\n\
             let _region=\"eastus\";\n\
             T | where ts between(_startTime .. _endTime)"
        );
    }

    #[test]
    fn query_text_without_labels_and_reserved_names() {
        let labels = BTreeMap::from([("startTime".to_string(), "x".to_string())]);
        assert_eq!(
            query_text(
                &w("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"),
                &labels,
                "T"
            ),
            "let _startTime=datetime(2026-01-01T00:00:00Z);\nlet _endTime=datetime(2026-01-01T00:59:59.9999999Z);\nT"
        );
    }

    /// Parses the `let` prefix the way a KQL lexer would: each line `let <ident>=<literal>;`.
    /// Returns the (identifier, decoded value) of each label statement and the remaining body.
    fn parse_prefix(q: &str) -> Option<(Vec<(String, String)>, &str)> {
        let mut rest = q;
        for var in ["_startTime", "_endTime"] {
            let line_end = rest.find('\n')?;
            let line = &rest[..line_end];
            let inner = line
                .strip_prefix(&format!("let {var}=datetime("))?
                .strip_suffix(");")?;
            Ticks::parse(inner).ok()?;
            rest = &rest[line_end + 1..];
        }
        let mut lets = Vec::new();
        while let Some(after) = rest.strip_prefix("let ") {
            let eq = after.find('=')?;
            let ident = &after[..eq];
            if ident.is_empty() || !ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let mut chars = after[eq + 1..].char_indices();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            let close = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\n' | '\r' => return None,
                    '\\' => value.push(match chars.next()?.1 {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        other => other,
                    }),
                    c => value.push(c),
                }
            };
            let tail = after[eq + 1 + close + 1..].strip_prefix(";\n")?;
            lets.push((ident.to_string(), value));
            rest = tail;
        }
        Some((lets, rest))
    }

    fn arb_interval() -> impl Strategy<Value = Span> {
        prop_oneof![
            (1i64..=86_400).prop_map(Span::from_secs),
            (10_000_000i64..=400 * 86_400 * TICKS_PER_SECOND).prop_map(Span),
        ]
    }

    /// Any characters, control characters and quotes included.
    fn arb_text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                any::<char>(),
                prop::sample::select(vec!['"', '\\', '\n', '\r', '\t', ';', '='])
            ],
            0..max,
        )
        .prop_map(String::from_iter)
    }

    /// Instants between 1900 and 2200.
    fn arb_ticks() -> impl Strategy<Value = Ticks> {
        (599_266_080_000_000_000i64..=694_034_496_000_000_000).prop_map(Ticks)
    }

    proptest! {
        #[test]
        fn alignment_is_idempotent_and_bounded(t in arb_ticks(), i in arb_interval()) {
            let d = align_down(t, i);
            prop_assert_eq!(align_down(d, i), d);
            prop_assert!(d <= t && t.0 - d.0 < i.0);
            let u = align_up(t, i);
            prop_assert_eq!(align_down(u, i), u);
            prop_assert!(u >= t && u.0 - t.0 < i.0);
        }

        #[test]
        fn newest_complete_is_due_aligned_and_the_newest(now in arb_ticks(), i in arb_interval(), delay_s in 0i64..7200) {
            let delay = Span::from_secs(delay_s);
            let win = newest_complete(now, i, delay);
            prop_assert!(win.is_aligned(i));
            prop_assert!(is_due(&win, now, delay));
            prop_assert!(!is_due(&next_window(win.end, i), now, delay));
        }

        #[test]
        fn windows_after_any_watermark_are_contiguous_and_end_aligned(wm in arb_ticks(), i in arb_interval(), n in 1usize..20) {
            let mut at = wm;
            for k in 0..n {
                let win = next_window(at, i);
                prop_assert_eq!(win.start, at);
                prop_assert!(win.end > win.start);
                prop_assert_eq!(align_down(win.end, i), win.end);
                if k > 0 { prop_assert!(win.is_aligned(i)); }
                at = win.end;
            }
        }

        #[test]
        fn catch_up_is_strictly_increasing_contiguous_and_complete(wm in arb_ticks(), i in arb_interval(), ahead in 0i64..50, delay_s in 0i64..600) {
            let delay = Span::from_secs(delay_s);
            let now = Ticks(wm.0 + ahead * i.0 + delay.0);
            let windows: Vec<Window> = due_windows(wm, i, now, delay).take(100).collect();
            let mut at = wm;
            for win in &windows {
                prop_assert_eq!(win.start, at);
                prop_assert!(win.end > win.start);
                prop_assert!(is_due(win, now, delay));
                at = win.end;
            }
            // The one after the last is not yet due: nothing due is left out.
            prop_assert!(!is_due(&next_window(at, i), now, delay));
        }

        #[test]
        fn label_keys_become_valid_identifiers(key in arb_text(12)) {
            let ident = kql_identifier(&key);
            prop_assert!(ident.starts_with('_'));
            prop_assert!(ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }

        #[test]
        fn no_label_can_inject_kql(labels in prop::collection::btree_map(arb_text(12), arb_text(16), 0..5), body in ".{0,40}") {
            let body = format!("T | {body}");
            let win = Window { start: Ticks(638_000_000_000_000_000), end: Ticks(638_000_003_000_000_000) };
            let q = query_text(&win, &labels, &body);
            let (lets, rest) = parse_prefix(&q).expect("prefix parses as let statements");
            let expected: Vec<(String, String)> = labels.iter()
                .map(|(k, v)| (kql_identifier(k), v.clone()))
                .filter(|(k, _)| !WINDOW_VARIABLES.contains(&k.as_str()))
                .collect();
            prop_assert_eq!(lets, expected);
            prop_assert_eq!(rest, body.trim());
        }
    }
}
