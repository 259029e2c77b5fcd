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
