//! The query prefix against a real KQL engine (duckdb-kql): every cluster label arrives in the
//! query as exactly the value it had, whatever characters it holds, and sanitised keys are valid
//! identifiers.
mod common;

use std::collections::BTreeMap;

use adxexporter::schedule::window::{Window, kql_identifier, query_text};
use adxexporter::time::Ticks;

/// Runs `csl` and returns the first row of the primary result as strings.
async fn first_row(url: &str, csl: &str) -> Vec<serde_json::Value> {
    adxexporter::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let body = serde_json::json!({ "db": "memory", "csl": csl });
    let response = client
        .post(format!("{url}/v2/rest/query"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post the query");
    let status = response.status();
    let text = response.text().await.expect("read the response");
    assert!(status.is_success(), "{status}: {text}\nquery:\n{csl}");
    let frames: Vec<serde_json::Value> = serde_json::from_str(&text).expect("v2 frames");
    let primary = frames
        .iter()
        .find(|f| f["FrameType"] == "DataTable" && f["TableKind"] == "PrimaryResult")
        .unwrap_or_else(|| panic!("no primary result in {text}"));
    primary["Rows"][0].as_array().cloned().expect("one row")
}

#[tokio::test]
async fn labels_reach_the_query_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.sql");
    std::fs::write(&init, "select 1;\n").unwrap();
    let peer = common::duckdb_kql(&init);

    let labels: BTreeMap<String, String> = [
        ("region", "eastus"),
        ("data-classification", "a\"b\\c"),
        ("multi.line", "one\ntwo\r\nthree\tfour"),
        ("inject", "\"; print pwned=1; let x=\""),
        ("_under", "ünïcødé ☃ 🚀"),
        ("empty", ""),
        ("9lives", "trailing backslash \\"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let window = Window {
        start: Ticks::parse("2026-01-01T00:00:00Z").unwrap(),
        end: Ticks::parse("2026-01-01T00:05:00Z").unwrap(),
    };
    let columns: Vec<String> = labels
        .keys()
        .enumerate()
        .map(|(i, k)| format!("c{i}={}", kql_identifier(k)))
        .collect();
    let body = format!("print s=_startTime, {}", columns.join(", "));
    let row = first_row(&peer.url, &query_text(&window, &labels, &body)).await;

    assert_eq!(row.len(), labels.len() + 1, "{row:?}");
    let start = Ticks::parse(row[0].as_str().unwrap()).unwrap();
    assert_eq!(start, window.start);
    for (i, value) in labels.values().enumerate() {
        assert_eq!(row[i + 1].as_str(), Some(value.as_str()), "label {i}");
    }
}

#[tokio::test]
async fn end_time_is_the_last_tick_so_between_excludes_the_next_window() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.sql");
    std::fs::write(&init, "select 1;\n").unwrap();
    let peer = common::duckdb_kql(&init);
    let window = Window {
        start: Ticks::parse("2026-01-01T00:00:00Z").unwrap(),
        end: Ticks::parse("2026-01-01T00:05:00Z").unwrap(),
    };
    let body = "print inside=datetime(2026-01-01T00:04:59Z) between (_startTime .. _endTime), \
                next=datetime(2026-01-01T00:05:00Z) between (_startTime .. _endTime)";
    let row = first_row(&peer.url, &query_text(&window, &BTreeMap::new(), body)).await;
    assert_eq!(row, vec![serde_json::json!(true), serde_json::json!(false)]);
}
