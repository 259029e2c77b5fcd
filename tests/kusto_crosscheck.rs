//! Our `KustoClient` and Microsoft's azure-kusto-data (Python) run the same KQL against the same
//! duckdb-kql instance (a real KQL engine behind the Kusto REST API); column names, types and every value
//! must agree. Also checks that engine errors arrive classified with the engine's message.

mod common;

use adxexporter::query::{
    DataSet, KustoAuth, KustoClient, KustoConfig, QueryError, QueryLimits, Table, Value,
    column_type_name,
};
use adxexporter::time::Ticks;

const QUERIES: &[&str] = &[
    "T | order by id asc",
    "T | where isnotnull(ts) | summarize n=count(), mx=max(i), av=avg(i) by bin(ts, 5m) | order by ts asc",
    r#"print a=1, b=2.5, c="x\"y", d=datetime(2026-01-01T00:00:00.1234567Z), e=timespan(1.02:03:04.5), f=dynamic({"k":[1,2]}), g=true, h=long(null), k=real(nan), m=real(-inf), n=guid(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11), o=tolong(9007199254740993)"#,
    "T | where id < 0",
];

fn init_sql() -> std::path::PathBuf {
    common::repo_root().join("tests/peers/crosscheck.sql")
}

fn client(url: &str) -> KustoClient {
    KustoClient::new(
        url::Url::parse(url).unwrap(),
        KustoAuth::None,
        KustoConfig::default(),
    )
    .unwrap()
}

fn limits() -> QueryLimits {
    QueryLimits {
        max_rows: 1000,
        max_bytes: 1 << 20,
    }
}

/// The official client's view of every query (see tests/peers/kusto_crosscheck.py for the format).
fn python_results(url: &str) -> Vec<serde_json::Value> {
    let script = common::repo_root().join("tests/peers/kusto_crosscheck.py");
    let out = std::process::Command::new(common::venv_bin("python"))
        .arg(script)
        .arg(url)
        .arg("memory")
        .arg(serde_json::to_string(QUERIES).unwrap())
        .output()
        .expect("run the Python cross-check client");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// Does our cell equal the Python client's normalised cell?
fn same(ours: &Value, theirs: &serde_json::Value) -> bool {
    let text = theirs.as_str();
    match (ours, text) {
        (Value::Null, None) => theirs.is_null(),
        (Value::Null, Some(_)) | (_, None) => false,
        (Value::Bool(b), Some(t)) => b.to_string() == t,
        (Value::Int(i), Some(t)) => i.to_string() == t,
        (Value::Long(l), Some(t)) => l.to_string() == t,
        (Value::Real(r), Some(t)) => {
            let theirs: f64 = t.parse().unwrap_or_else(|_| panic!("python real {t:?}"));
            (r.is_nan() && theirs.is_nan()) || *r == theirs
        }
        (Value::Decimal(d), Some(t)) => d.as_str() == t,
        (Value::DateTime(ts), Some(t)) => Ticks::parse(t).ok() == Some(*ts),
        (Value::TimeSpan(s), Some(t)) => s.0 % 10 == 0 && (s.0 / 10).to_string() == t,
        (Value::Guid(g), Some(t)) | (Value::String(g), Some(t)) => g.as_str() == t,
        (Value::Dynamic(raw), Some(t)) => {
            let a: serde_json::Value = serde_json::from_str(raw).expect("our dynamic is JSON");
            let b: serde_json::Value = serde_json::from_str(t).expect("python dynamic is JSON");
            a == b
        }
    }
}

fn assert_agree(query: &str, ours: &Table, theirs: &serde_json::Value) {
    let columns: Vec<(String, String)> = ours
        .columns
        .iter()
        .map(|c| (c.name.clone(), column_type_name(&c.ty).to_owned()))
        .collect();
    let their_columns: Vec<(String, String)> =
        serde_json::from_value(theirs["columns"].clone()).expect("columns");
    assert_eq!(columns, their_columns, "{query}: columns");
    let rows = theirs["rows"].as_array().expect("rows");
    assert_eq!(ours.row_count(), rows.len(), "{query}: row count");
    for (i, (our_row, their_row)) in ours.rows().zip(rows).enumerate() {
        for (j, (a, b)) in our_row
            .iter()
            .zip(their_row.as_array().unwrap())
            .enumerate()
        {
            assert!(
                same(a, b),
                "{query}: row {i} column {:?}: ours {a:?}, python {b}",
                ours.columns[j].name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_agrees_with_the_official_client() {
    let peer = common::duckdb_kql(&init_sql());
    let theirs = python_results(&peer.url);
    let kusto = client(&peer.url);
    let mut ours: Vec<DataSet> = Vec::new();
    for q in QUERIES {
        ours.push(
            kusto
                .query("memory", q, &limits())
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}")),
        );
    }
    for ((q, set), theirs) in QUERIES.iter().zip(&ours).zip(&theirs) {
        assert!(
            theirs.get("error").is_none(),
            "{q}: python client: {theirs}"
        );
        assert_agree(q, set.primary().expect("primary"), theirs);
    }
    // Spot checks so agreement is not vacuous.
    let t = ours[0].primary().unwrap();
    assert_eq!(t.row_count(), 6);
    assert_eq!(
        t.row(0)[t.column_index("l").unwrap()],
        Value::Long(i64::MAX)
    );
    assert_eq!(
        t.row(1)[t.column_index("l").unwrap()],
        Value::Long(i64::MIN)
    );
    assert!(matches!(t.row(1)[t.column_index("r").unwrap()], Value::Real(x) if x.is_nan()));
    assert_eq!(
        t.row(2)[t.column_index("r").unwrap()],
        Value::Real(f64::INFINITY)
    );
    assert_eq!(
        t.row(1)[t.column_index("s").unwrap()],
        Value::String("quote \" backslash \\ tab\tnewline\nend".into())
    );
    assert_eq!(
        t.row(2)[t.column_index("s").unwrap()],
        Value::String("ünïcødé ✓ 𝄞 日本".into())
    );
    assert_eq!(
        t.row(0)[t.column_index("dyn").unwrap()],
        Value::Dynamic(r#"{"k":"v","n":[1,2,3]}"#.into())
    );
    assert_eq!(
        t.row(1)[t.column_index("dyn").unwrap()],
        Value::Dynamic(r#""just a string""#.into())
    );
    assert!(t.row(4).iter().skip(1).all(|v| *v == Value::Null));
    assert_eq!(ours[1].primary().unwrap().row_count(), 4);
    assert_eq!(
        ours[2].primary().unwrap().row(0)[11],
        Value::Long(9_007_199_254_740_993)
    );
    assert_eq!(ours[3].primary().unwrap().row_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_are_classified_with_the_engine_message() {
    let peer = common::duckdb_kql(&init_sql());
    let kusto = client(&peer.url);

    let err = kusto
        .query("memory", "T | project nosuchcolumn", &limits())
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.kind(), "bad_request");
    match &err {
        QueryError::Http { status: 400, error } => {
            assert_eq!(error.code.as_deref(), Some("General_BadRequest"));
            assert!(error.message.contains("nosuchcolumn"), "{}", error.message);
            assert_eq!(error.permanent, Some(true));
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }

    let err = kusto
        .query("nodb", "T | take 1", &limits())
        .await
        .unwrap_err();
    assert!(err.is_permanent());
    match &err {
        QueryError::DatabaseNotFound { database, message } => {
            assert_eq!(database, "nodb");
            assert!(message.contains("General_DatabaseNotFound"), "{message}");
        }
        other => panic!("expected 404, got {other:?}"),
    }

    // The row limit applies to a real response too.
    let tight = QueryLimits {
        max_rows: 5,
        max_bytes: 1 << 20,
    };
    let err = kusto.query("memory", "T", &tight).await.unwrap_err();
    assert!(
        matches!(err, QueryError::TooManyRows { limit: 5 }),
        "{err:?}"
    );
}
