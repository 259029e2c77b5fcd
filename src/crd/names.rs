//! The naming rules, in one place: what a metric name and a label name may contain, and which KQL
//! variable a cluster label becomes. Validation applies them to the resource's columns and names
//! (refusing what cannot be made valid, reserved names and collisions); the transform applies the
//! same functions to names built from cell values; the query prefix and `check` use the same
//! [`kql_identifier`].

/// Maps every char outside `[a-zA-Z0-9_:]` to `_` (the leading-digit rule applies to whole names
/// only). Validation uses it too, to refuse value columns whose suffixes would be equal.
pub(crate) fn sanitize_name_chars(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_name_chars(&mut out, s);
    out
}

pub(crate) fn push_name_chars(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    {
        return out.push_str(s);
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
}

/// A valid Prometheus metric name from arbitrary text: `[a-zA-Z0-9_:]` kept, others `_`, `_` before a digit.
#[cfg(test)] // the oracle of the transform's name property test
pub(crate) fn sanitize_metric_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    push_name_chars(&mut out, s);
    out
}

/// The sanitising part of the one label-name rule (docs/design.md#labels): every character outside
/// `[a-zA-Z0-9_]` becomes `_` (one per character, no collapsing) and a leading digit gets a `_` in
/// front, so the result always matches `[a-zA-Z_][a-zA-Z0-9_]*` (hence `_` for an empty name). The
/// rest of the rule is applied by validation of `spec.transform.labelColumns`: an empty or blank
/// column is a configuration error before it is ever sanitised, and so are a reserved result and
/// two columns with the same result.
pub(crate) fn sanitize_label_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// A label name Prometheus reserves for itself.
pub(crate) fn is_reserved_label_name(name: &str) -> bool {
    name.starts_with("__")
}

/// Variables the window prefix of every query defines (docs/design.md#query-text); a cluster label
/// may not reuse them.
pub(crate) const WINDOW_VARIABLES: [&str; 2] = ["_startTime", "_endTime"];

/// The KQL variable for a cluster-label key: `_` in front (unless present) and every character
/// outside `[A-Za-z0-9_]` replaced by `_`.
pub fn kql_identifier(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    if !key.starts_with('_') {
        out.push('_');
    }
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// A valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn is_metric_name(s: &str) -> bool {
    s.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
    }) && !s.is_empty()
}

/// A valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_label_name(s: &str) -> bool {
    s.bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()))
        && !s.is_empty()
}

/// Whether a name part carries anything but separators: a part with no ASCII letter or digit
/// sanitises to `_`s only (docs/design.md#metric-names).
pub(crate) fn has_letter_or_digit(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_alphanumeric())
}

/// `nameStyle: adxmon`: one name part normalised exactly as the Go exporter's
/// `normalizeColumnName` does: `_` between a lower case letter or digit and an upper case letter,
/// and before the last of several upper case letters followed by a lower case one (its two regexes,
/// applied in turn, leftmost first); lower case; every char outside `[a-z0-9_]` → `_`; runs of `_`
/// collapsed; `_` trimmed; `_` before a leading digit. Empty when nothing is left (the Go exporter's
/// error).
pub(crate) fn adxmon_normalize(s: &str) -> String {
    static CAMEL: std::sync::LazyLock<[regex::Regex; 2]> = std::sync::LazyLock::new(|| {
        // Constant patterns: they compile (a unit test runs them).
        #[allow(clippy::unwrap_used)]
        [
            regex::Regex::new("([a-z0-9])([A-Z])").unwrap(),
            regex::Regex::new("([A-Z])([A-Z][a-z])").unwrap(),
        ]
    });
    let [lower_upper, upper_word] = &*CAMEL;
    let split = lower_upper.replace_all(s, "${1}_${2}");
    let split = upper_word.replace_all(&split, "${1}_${2}");
    let lowered: String = (split.to_lowercase().chars())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = adxmon_join([lowered.as_str()]);
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Go exporter's `constructMetricName` over normalised parts: the non-empty parts joined with
/// `_`, runs of `_` collapsed, `_` trimmed at both ends (which drops the `_` a digit-first first
/// part was given; [`adxmon_name`] puts it back, since such a name is not valid).
pub(crate) fn adxmon_join<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('_');
        }
        for c in part.chars() {
            if c == '_' && (out.is_empty() || out.ends_with('_')) {
                continue;
            }
            out.push(c);
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// A whole `nameStyle: adxmon` name from normalised parts; `_` in front of a leading digit (the Go
/// exporter leaves such a name invalid, and every receiver refuses it).
pub(crate) fn adxmon_name<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = adxmon_join(parts);
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}
