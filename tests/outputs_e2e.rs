//! Hybrid mode end to end (issue #8): the real `adxexporter run` binary against duckdb-kql with all
//! four outputs at once — Prometheus remote write (Prometheus), OTLP/HTTP (the Python decoder),
//! OTLP/gRPC (rotel, relaying to a second Python decoder) and the scrape page (scraped by a second,
//! real Prometheus through `static_configs`) — and a second resource whose `spec.outputs` selects
//! only the scrape page. Every output must hold exactly the oracle's samples: the push outputs every
//! delivered window, the scrape page each exporter's newest one. Deleting that resource removes its
//! page.
//!
//! The dataset also covers the next half hour, so every window the exporter completes while the test
//! runs has data and the page never shows an empty newest window; the outputs are compared once they
//! agree on the newest delivered window (a window may complete during the test).

mod common;
mod run_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{duckdb_kql, free_port, http_get};
use run_support::*;

const LIMIT: Duration = Duration::from_secs(120);
/// The metric of the resource that selects only the scrape output.
const SCRAPE_ONLY: &str = "e2e_scrape_only";

/// Parses the scrape page lines of `metric`: (host, ms) → value.
fn page_samples(page: &str, metric: &str) -> BTreeMap<(String, i64), f64> {
    let prefix = format!("{metric}{{Host=\"");
    page.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (host, rest) = rest.split_once("\"} ").expect("Host is the only label");
            let mut fields = rest.split(' ');
            let value: f64 = fields.next().unwrap().parse().unwrap();
            let ms: i64 = fields.next().expect("--scrape-timestamps").parse().unwrap();
            ((host.to_owned(), ms), value)
        })
        .collect()
}

/// The window starts present in a sample set.
fn windows(samples: impl IntoIterator<Item = (String, i64)>) -> BTreeSet<i64> {
    samples.into_iter().map(|(_, t)| t).collect()
}

/// Checks one output's samples against the oracle restricted to `delivered` windows.
fn matches(
    output: &str,
    got: &[((String, i64), f64)],
    oracle: &BTreeMap<(String, i64), f64>,
    delivered: &BTreeSet<i64>,
) -> Result<(), String> {
    let want: BTreeMap<_, _> = (oracle.iter())
        .filter(|((_, t), _)| delivered.contains(t))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let mut seen = BTreeMap::new();
    for (k, v) in got {
        let Some(w) = want.get(k) else {
            return Err(format!("{output}: {k:?} = {v} not expected"));
        };
        if w.to_bits() != v.to_bits() {
            return Err(format!("{output}: {k:?} = {v}, want {w}"));
        }
        if seen.insert(k.clone(), *v).is_some() {
            return Err(format!("{output}: {k:?} arrived twice"));
        }
    }
    if seen.len() != want.len() {
        return Err(format!(
            "{output}: {} of {} samples so far",
            seen.len(),
            want.len()
        ));
    }
    Ok(())
}

#[test]
fn all_four_outputs_receive_the_same_samples() {
    let past = Dataset::ending_now(60, 5);
    let data = Dataset {
        windows: past.windows + 30,
        ..past
    };
    let oracle = data.expected();
    let work = tempfile::tempdir().unwrap();
    let kusto = duckdb_kql(&write_init_sql(work.path(), &data));
    let prom = Prometheus::start();
    let otlp = OtlpSink::start();
    let grpc_sink = OtlpSink::start();
    let rotel = common::rotel(&format!("http://127.0.0.1:{}", grpc_sink.port));
    let scrape_port = free_port();
    let scraper = common::prometheus_with_config(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: adxexporter\n    \
         static_configs:\n      - targets: ['127.0.0.1:{scrape_port}']\n"
    ));

    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let start = data.first_start_ms;
    std::fs::write(
        manifests.join("cpu.yaml"),
        resource_yaml("cpu", "1m", start, GOOD_BODY),
    )
    .unwrap();
    let scrape_only = resource_yaml("scrape-only", "1m", start, GOOD_BODY).replace(
        &format!("defaultMetricName: {METRIC}"),
        &format!("defaultMetricName: {SCRAPE_ONLY}"),
    ) + "  outputs: [scrape]\n";
    std::fs::write(manifests.join("scrape-only.yaml"), scrape_only).unwrap();

    let args: Vec<String> = [
        "--remote-write-endpoint",
        &prom.write_url(),
        "--otlp-endpoint",
        &otlp.url(),
        "--otlp-grpc-endpoint",
        &rotel.grpc_url,
        "--scrape-port",
        &scrape_port.to_string(),
        "--scrape-timestamps",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut exporter = Exporter::start(work.path(), &kusto.url, &manifests, &args);
    exporter.wait_caught_up("cpu", past.end_ms(), LIMIT);
    exporter.wait_caught_up("scrape-only", past.end_ms(), LIMIT);

    // The outputs agree once each holds every window up to the page's newest one.
    let newest = eventually(
        "all four outputs to hold the same windows",
        LIMIT,
        || {
            let page = http_get(scrape_port, "/metrics")?.1;
            let scrape = page_samples(&page, METRIC);
            let newest = *windows(scrape.keys().cloned()).last()?;
            let delivered: BTreeSet<i64> = windows(oracle.keys().cloned())
                .into_iter()
                .filter(|t| *t <= newest)
                .collect();
            let scrape: Vec<_> = scrape.into_iter().collect();
            let rw: Vec<_> = prometheus_samples(prom.port).into_iter().collect();
            let checks = [
                matches("scrape", &scrape, &oracle, &BTreeSet::from([newest])),
                matches("remote write", &rw, &oracle, &delivered),
                matches("OTLP/HTTP", &otlp.points(), &oracle, &delivered),
                matches("OTLP/gRPC", &grpc_sink.points(), &oracle, &delivered),
            ];
            checks.iter().all(Result::is_ok).then_some(newest)
        },
        || {
            let page = http_get(scrape_port, "/metrics").map(|p| p.1);
            format!("page: {page:?}\n{}", exporter.log_tail())
        },
    );
    assert!(newest >= past.window_start(past.windows - 1));

    // The scrape-only resource is on the page (its newest window) and in no push output.
    let page = http_get(scrape_port, "/metrics").unwrap().1;
    let only = page_samples(&page, SCRAPE_ONLY);
    assert_eq!(only.len(), HOSTS.len(), "{page}");
    for ((host, t), v) in &only {
        assert_eq!(oracle[&(host.clone(), *t)].to_bits(), v.to_bits());
    }
    let (_, body) = http_get(
        prom.port,
        &format!("/api/v1/query?query=count({SCRAPE_ONLY})"),
    )
    .unwrap();
    assert!(body.contains("\"result\":[]"), "not remote-written: {body}");
    // (OtlpSink::points asserts every OTLP point is METRIC, so neither OTLP output carried it.)

    // The real scraper read the page back, with the samples' own timestamps.
    let scraped = eventually(
        "Prometheus to scrape the page",
        LIMIT,
        || {
            let time = now_ms() / 1000 + 60;
            let q = format!("/api/v1/query?query={METRIC}%5B30m%5D&time={time}");
            let (code, body) = http_get(scraper.port, &q)?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let mut got = BTreeMap::new();
            for s in v["data"]["result"].as_array()? {
                let host = s["metric"]["Host"].as_str()?.to_owned();
                for pair in s["values"].as_array()? {
                    let ms = (pair[0].as_f64()? * 1000.0).round() as i64;
                    got.insert((host.clone(), ms), pair[1].as_str()?.parse::<f64>().ok()?);
                }
            }
            // The page may move on to a later window before the scraper's first scrape (its
            // discovery starts a few seconds after it is ready): any window from `newest` on,
            // complete for every host, shows the page was read back.
            let whole = windows(got.keys().cloned()).into_iter().any(|t| {
                t >= newest && HOSTS.iter().all(|h| got.contains_key(&(h.to_string(), t)))
            });
            (code == 200 && whole).then_some(got)
        },
        || {
            let targets = http_get(scraper.port, "/api/v1/targets").map(|t| t.1);
            format!("scraper targets: {targets:?}\n{}", exporter.log_tail())
        },
    );
    for (k, v) in &scraped {
        assert_eq!(oracle[k].to_bits(), v.to_bits(), "scraped {k:?}");
    }

    // Deleting the scrape-only resource removes its page; the other exporter's page stays.
    std::fs::remove_file(manifests.join("scrape-only.yaml")).unwrap();
    let page = eventually(
        "the deleted resource's page to go",
        LIMIT,
        || {
            let page = http_get(scrape_port, "/metrics")?.1;
            page_samples(&page, SCRAPE_ONLY).is_empty().then_some(page)
        },
        || exporter.log_tail(),
    );
    assert_eq!(page_samples(&page, METRIC).len(), HOSTS.len(), "{page}");

    assert!(exporter.terminate(LIMIT).success());
}
