//! The streaming decoder against `decode_v2`: fixtures in any chunks, every prefix, damaged
//! bodies, limits, and what it holds.

use super::*;
use crate::query::decode_v2;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn limits() -> QueryLimits {
    QueryLimits {
        max_rows: 10_000,
        max_bytes: 1 << 20,
    }
}

/// `body` pushed in chunks of `sizes` (cycled), then finished.
fn streamed(body: &[u8], limits: &QueryLimits, sizes: &[usize]) -> Result<DataSet, QueryError> {
    let mut stream = V2Stream::new(*limits, None);
    let mut rest = body;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).clamp(1, rest.len()));
        stream.push(chunk)?;
        rest = tail;
    }
    stream.finish().map(|(set, _)| set)
}

/// The committed v2 fixtures, and the SDK captures when `ADXEXPORTER_KUSTO_FIXTURES` names them.
fn bodies() -> Vec<(String, Vec<u8>)> {
    let mut dirs: Vec<PathBuf> = ["recorded/v2", "derived/v2"]
        .iter()
        .map(|d| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/kusto")
                .join(d)
        })
        .collect();
    if let Some(sdk) = std::env::var_os("ADXEXPORTER_KUSTO_FIXTURES") {
        dirs.extend(
            ["go/v2", "go/v1", "python"]
                .iter()
                .map(|d| Path::new(&sdk).join(d)),
        );
    }
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let sdk = std::env::var_os("ADXEXPORTER_KUSTO_FIXTURES").is_some();
    assert!(
        out.len() >= if sdk { 42 } else { 21 },
        "{} fixtures",
        out.len()
    );
    out.sort();
    out
}

fn same(name: &str, want: &Result<DataSet, QueryError>, got: &Result<DataSet, QueryError>) {
    if let Some(diff) = differ(want, got) {
        panic!("{name}: {diff}");
    }
}

/// Where the two results' descriptions part, if they do.
fn differ(want: &Result<DataSet, QueryError>, got: &Result<DataSet, QueryError>) -> Option<String> {
    let (w, g) = (format!("{want:?}"), format!("{got:?}"));
    let at = w.bytes().zip(g.bytes()).position(|(a, b)| a != b);
    let at = at.or((w.len() != g.len()).then(|| w.len().min(g.len())))?;
    let from = w.floor_char_boundary(at.saturating_sub(80));
    let cut = |s: &str| s[from.min(s.len())..].chars().take(300).collect::<String>();
    Some(format!("want …{}\n got …{}", cut(&w), cut(&g)))
}

/// Every fixture, in chunks of every small size and a few odd mixes: the same result as
/// `decode_v2`, errors word for word.
#[test]
fn every_fixture_streams_like_it_decodes_in_any_chunks() {
    for (name, body) in bodies() {
        let want = decode_v2(&body, &limits());
        for sizes in [
            &[1][..],
            &[2],
            &[3],
            &[5],
            &[7, 1, 64],
            &[64],
            &[4096],
            &[body.len()],
        ] {
            same(
                &format!("{name} in {sizes:?}"),
                &want,
                &streamed(&body, &limits(), sizes),
            );
        }
    }
}

/// A body cut at any byte streams to exactly what `decode_v2` makes of the same prefix.
#[test]
fn every_prefix_streams_like_it_decodes() {
    for (name, body) in bodies() {
        for cut in 0..body.len() {
            let prefix = &body[..cut];
            let want = decode_v2(prefix, &limits());
            same(
                &format!("{name} cut at {cut}"),
                &want,
                &streamed(prefix, &limits(), &[13]),
            );
        }
    }
}

/// Odd and broken bodies, a byte at a time and whole.
#[test]
fn odd_bodies_stream_like_they_decode() {
    for body in [
        "",
        "  \n",
        "[]",
        " [ ] \n",
        "\x0c[]",
        "[]\x0c",
        "[]x",
        "[] ,",
        "[,]",
        "[1]",
        "[{}]",
        "[{},]",
        "[{} {}]",
        "[{\"FrameType\" 1}]",
        "[{\"FrameType\":\"DataSetCompletion\",}]",
        "[{\"FrameType\":\"DataSetCompletion\"} x",
        "[{\"FrameType\":\"DataSetCompletion\"}]",
        "[{\"FrameType\":\"DataSetCompletion\",\"HasErrors\":tru}]",
        "[{\"FrameType\":\"DataTable\",\"TableKind\":\"PrimaryResult\",\"Columns\":[{\"ColumnName\":\"x\",\"ColumnType\":\"long\"}],\"Rows\":[[1],[2,],[3]]}]",
        "[{\"FrameType\":\"DataTable\",\"TableKind\":\"PrimaryResult\",\"Columns\":[{\"ColumnName\":\"x\",\"ColumnType\":\"long\"}],\"Rows\":[[1] [2]]}]",
        "[{\"FrameType\":\"DataTable\",\"TableKind\":\"PrimaryResult\",\"Columns\":[{\"ColumnName\":\"x\",\"ColumnType\":\"long\"}],\"Rows\":[[12345678901234567890123]]},{\"FrameType\":\"DataSetCompletion\"}]",
        "[{\"FrameType\":\"DataTable\",\"Rows\":[[1]],\"TableKind\":\"PrimaryResult\",\"Columns\":[{\"ColumnName\":\"x\",\"ColumnType\":\"long\"}]},{\"FrameType\":\"DataSetCompletion\"}]",
        "<html>busy</html>",
        "{\"Tables\":[]}",
    ] {
        let want = decode_v2(body.as_bytes(), &limits());
        for sizes in [&[1][..], &[2], &[body.len().max(1)]] {
            same(
                &format!("{body:?} in {sizes:?}"),
                &want,
                &streamed(body.as_bytes(), &limits(), sizes),
            );
        }
    }
}

#[test]
fn limits_fail_mid_stream() {
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kusto/recorded/v2/metrics.json"),
    )
    .unwrap();
    let tight = QueryLimits {
        max_rows: 29,
        ..limits()
    };
    let mut stream = V2Stream::new(tight, None);
    let mut failed_at = None;
    for (i, chunk) in body.chunks(16).enumerate() {
        if let Err(e) = stream.push(chunk) {
            assert!(matches!(e, QueryError::TooManyRows { limit: 29 }), "{e:?}");
            failed_at = Some(i * 16);
            break;
        }
    }
    // Failed at the 30th row, before the end of the body.
    let at = failed_at.expect("the row limit stops the stream");
    assert!(at < body.len() - 100, "{at} of {}", body.len());
    let short = QueryLimits {
        max_bytes: 100,
        ..limits()
    };
    let mut stream = V2Stream::new(short, None);
    assert!(stream.push(&body[..100]).is_ok());
    assert!(matches!(
        stream.push(&body[100..101]),
        Err(QueryError::TooManyBytes { limit: 100 })
    ));
}

/// What is held while streaming is the rows and about one chunk, not the body.
#[test]
fn the_buffer_holds_about_one_chunk() {
    let body = many_rows(5000);
    let mut stream = V2Stream::new(limits(), None);
    let mut most = 0;
    for chunk in body.chunks(1000) {
        stream.push(chunk).unwrap();
        most = most.max(stream.input.buf.capacity());
    }
    assert!(most <= 4000, "{most}");
    let (set, decoded) = stream.finish().unwrap();
    assert_eq!(set, decode_v2(&body, &limits()).unwrap());
    assert_eq!(set.primary().unwrap().row_count(), 5000);
    // Three cells per row, and each distinct text once ("a label", "é\"0", "é\"1": 32 each).
    assert_eq!(decoded, 5000 * 3 * 16 + 3 * 32);
}

#[test]
fn a_reader_decodes_like_pushed_chunks() {
    let body = many_rows(3000);
    let want = decode_v2(&body, &limits()).unwrap();
    assert_eq!(decode_v2_reader(&body[..], &limits()).unwrap(), want);
    assert_eq!(decode_v2_reader(Trickle(&body), &limits()).unwrap(), want);
    let err = decode_v2_reader(&body[..body.len() - 3], &limits()).unwrap_err();
    assert!(matches!(err, QueryError::Truncated { .. }), "{err:?}");
}

/// A reader that hands out at most 7 bytes at a time.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// A v2 body of `rows` rows `[i, "a label", "é\"0"]` (or `"é\"1"`), one a line.
fn many_rows(rows: usize) -> Vec<u8> {
    let cells: Vec<String> = (0..rows)
        .map(|i| format!(r#"[{i},"a label","é\"{}"]"#, i % 2))
        .collect();
    let columns = [("i", "long"), ("l", "string"), ("t", "string")];
    crate::query::test_body(&columns, &cells, ",\n")
}

/// The stream words UTF-8 faults itself (offsets in the whole body): as `std` does, so
/// `decode_v2`, which uses the same words, says what it always said.
#[test]
fn utf8_faults_are_worded_as_std_words_them() {
    for (bytes, at) in [(&b"ab\xe2\x82"[..], 2), (&b"a\xffb"[..], 1)] {
        let e = std::str::from_utf8(bytes).unwrap_err();
        assert_eq!(e.valid_up_to(), at);
        let detail = match not_utf8(e.valid_up_to(), e.error_len()) {
            QueryError::Truncated { detail } | QueryError::Malformed { detail } => detail,
            other => panic!("{other:?}"),
        };
        assert_eq!(detail, format!("the body is not UTF-8: {e}"));
    }
}

#[test]
fn each_fault_example_fails_for_its_fault() {
    for (fault, words) in [
        (Fault::ListCommaOrEnd, "expected `,` or `]`"),
        (Fault::ObjectCommaOrEnd, "expected `,` or `}`"),
        (Fault::KeyMustBeAString, "key must be a string"),
        (Fault::Colon, "expected `:`"),
        (Fault::TrailingComma, "trailing comma"),
        (Fault::TrailingCharacters, "trailing characters"),
        (Fault::EofList, "EOF while parsing a list"),
        (Fault::EofObject, "EOF while parsing an object"),
        (Fault::EofValue, "EOF while parsing a value"),
    ] {
        let e = serde_json::from_str::<serde_json::Value>(fault.example()).unwrap_err();
        assert!(e.to_string().starts_with(words), "{fault:?}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// One byte of a fixture changed, dropped or added, streamed in random chunks: the same
    /// result as `decode_v2` (of a body that is not UTF-8, the same error when the stream
    /// meets that fault first).
    #[test]
    fn a_damaged_body_streams_like_it_decodes(
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![
            Just(b'['), Just(b']'), Just(b'{'), Just(b'}'), Just(b','), Just(b':'),
            Just(b'"'), Just(b'\\'), Just(b' '), Just(b'\n'), Just(b'0'), Just(b'-'),
            Just(b'.'), Just(b'e'), Just(b'n'), Just(0xc3), Just(0xff), any::<u8>(),
        ],
        how in 0..3u8,
        sizes in prop::collection::vec(1..40usize, 1..4),
    ) {
        let fixtures = FIXTURES.get_or_init(|| bodies().into_iter().map(|(_, b)| b).collect());
        let mut body = fixtures[pick.index(fixtures.len())].clone();
        let i = at.index(body.len());
        match how {
            0 => body[i] = byte,
            1 => { body.remove(i); }
            _ => body.insert(i, byte),
        }
        let want = decode_v2(&body, &limits());
        let got = streamed(&body, &limits(), &sizes);
        if std::str::from_utf8(&body).is_err() {
            // `decode_v2` checks UTF-8 first; a stream meets the faults in body order.
            prop_assert!(got.is_err());
            if got.as_ref().is_err_and(|e| e.to_string().contains("not UTF-8")) {
                prop_assert!(differ(&want, &got).is_none(), "{:?}", differ(&want, &got));
            }
        } else if let Some(diff) = differ(&want, &got) {
            prop_assert!(false, "{}", diff);
        }
    }
}

static FIXTURES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
