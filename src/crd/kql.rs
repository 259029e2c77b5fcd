//! A textual look at a query body, for `adxexporter check`: which identifiers it uses. KQL is not
//! parsed; the scan only knows enough of its lexical rules to skip what cannot name a variable:
//! `//` comments, string literals (`'…'`, `"…"` with `\` escapes, verbatim `@'…'`/`@"…"` with
//! doubled quotes, multi-line ```` ```…``` ```` and `~~~…~~~`), numbers and timespans (`5m`,
//! `1.5h`), and member names after a single `.` (`Properties._x`). Everything else that looks like
//! an identifier (`[A-Za-z_][A-Za-z0-9_]*`) counts as one.

/// The identifiers of a body, in order of first use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct BodyNames {
    /// Every identifier used outside comments, strings and member access, once each.
    used: Vec<String>,
    /// Identifiers the body itself defines: followed by `=` (not `==` or `=~`: `let _x = …`,
    /// `extend _x = …`, `summarize _x = count()`) or by `:` (a function parameter `(_x: string)`).
    defined: Vec<String>,
}

impl BodyNames {
    /// Whether the body uses `name` (case-sensitive, as KQL is).
    pub(crate) fn uses(&self, name: &str) -> bool {
        self.used.iter().any(|u| u == name)
    }

    /// The identifiers starting with `_` that the body uses but does not define itself, in order of
    /// first use: what it expects the query prefix (or the table) to provide.
    pub(crate) fn underscore_names(&self) -> impl Iterator<Item = &str> {
        (self.used.iter())
            .filter(|u| u.starts_with('_') && u.len() > 1 && !self.defined.contains(u))
            .map(String::as_str)
    }
}

/// Scans `body` (see the module docs).
pub(crate) fn scan(body: &str) -> BodyNames {
    let b = body.as_bytes();
    let mut names = BodyNames::default();
    // The last two bytes that were neither whitespace nor inside a comment or string.
    let (mut prev, mut prev2) = (b' ', b' ');
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = find_from(b, i, b"\n").map_or(b.len(), |end| end + 1);
                continue;
            }
            b'@' if matches!(b.get(i + 1), Some(b'\'' | b'"')) => {
                i = skip_verbatim(b, i + 1);
                (prev2, prev) = (prev, b'"');
                continue;
            }
            b'`' | b'~' if b.get(i..i + 3) == Some(&[c, c, c][..]) => {
                let fence = [c, c, c];
                i = find_from(b, i + 3, &fence).map_or(b.len(), |end| end + 3);
                (prev2, prev) = (prev, b'"');
                continue;
            }
            b'\'' | b'"' => {
                i = skip_string(b, i);
                (prev2, prev) = (prev, b'"');
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = run_end(b, i, |c| c.is_ascii_alphanumeric() || c == b'_');
                let member = prev == b'.' && prev2 != b'.';
                if !member && let Some(word) = body.get(i..end) {
                    if !names.used.iter().any(|u| u == word) {
                        names.used.push(word.to_owned());
                    }
                    if defines(b, end) && !names.defined.iter().any(|d| d == word) {
                        names.defined.push(word.to_owned());
                    }
                }
                i = end;
                (prev2, prev) = (prev, b'a');
                continue;
            }
            c if c.is_ascii_digit() => {
                i = run_end(b, i, |c| {
                    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
                });
                (prev2, prev) = (prev, b'0');
                continue;
            }
            c if c.is_ascii_whitespace() => {}
            c => (prev2, prev) = (prev, c),
        }
        i += 1;
    }
    names
}

fn run_end(b: &[u8], from: usize, keep: impl Fn(u8) -> bool) -> usize {
    (b.iter().skip(from))
        .position(|&c| !keep(c))
        .map_or(b.len(), |n| from + n)
}

fn find_from(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    (b.get(from..)?.windows(needle.len()))
        .position(|w| w == needle)
        .map(|n| from + n)
}

/// After a `'` or `"` at `at`: the index after its closing quote. `\` escapes the next byte; a
/// line end also ends it (a plain KQL string is one line), so one stray quote hides one line only.
fn skip_string(b: &[u8], at: usize) -> usize {
    let Some(&quote) = b.get(at) else {
        return b.len();
    };
    let mut i = at + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            b'\n' => return i,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// A verbatim string whose quote is at `at` (after the `@`): no escapes, the quote doubled.
fn skip_verbatim(b: &[u8], at: usize) -> usize {
    let Some(&quote) = b.get(at) else {
        return b.len();
    };
    let mut i = at + 1;
    while let Some(&c) = b.get(i) {
        match c {
            c if c == quote && b.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return i + 1,
            b'\n' => return i,
            _ => i += 1,
        }
    }
    b.len()
}

/// Whether the identifier ending at `end` is being defined: next comes `=` (not `==`, `=~`) or `:`.
fn defines(b: &[u8], end: usize) -> bool {
    let next = run_end(b, end, |c| c == b' ' || c == b'\t');
    match b.get(next) {
        Some(b'=') => !matches!(b.get(next + 1), Some(b'=' | b'~')),
        Some(b':') => true,
        _ => false,
    }
}
