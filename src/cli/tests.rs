//! Unit tests of the flags: defaults, list and pair parsing, cross-flag checks, value parsers and
//! the clap definition itself. The binary's own behaviour (exit codes, `--help`) is in tests/cli.rs.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::*;
use crate::cli::parse::{parse_listen_addr, parse_size};
use crate::query::KustoAuth;
use crate::shard::{Membership, Shard};
use crate::telemetry::LogFormat;
use crate::time::Span;

fn cli(args: &[&str]) -> Result<Command, clap::Error> {
    parse_from(std::iter::once("adxexporter").chain(args.iter().copied()))
}

fn run(args: &[&str]) -> Result<RunConfig, CliError> {
    match cli(args).unwrap() {
        Command::Run(a) => a.validate(),
        other => panic!("not run: {other:?}"),
    }
}

const OUT: &str = "--otlp-endpoint=http://collector:4318/v1/metrics";

#[test]
fn run_is_the_default_and_defaults_apply() {
    let c = run(&[OUT]).unwrap();
    assert_eq!(c.wal.dir, PathBuf::from("/var/lib/adxexporter"));
    assert_eq!(c.wal.config.max_bytes, 1 << 30);
    assert_eq!(c.outputs.otlp.as_ref().unwrap().max_request_bytes, 4 << 20);
    assert_eq!(c.telemetry.metrics_addr.port(), 8080);
    assert_eq!(c.telemetry.health_probe_addr.port(), 8081);
    assert_eq!(c.max_concurrent_queries, 4);
    // Derived at start from the cgroup memory limit.
    assert_eq!(c.query_memory_budget, None);
    assert_eq!(c.shutdown_grace, Span::from_secs(20));
    assert_eq!(c.kusto.config.server_timeout, Span::from_secs(240).to_std());
    assert_eq!(c.telemetry.log_format, LogFormat::Text);
    assert_eq!(c.kusto.auth, KustoAuth::Auto);
    let explicit = match cli(&["run", OUT]).unwrap() {
        Command::Run(a) => a.validate().unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(explicit, c);
}

#[test]
fn query_memory_budget_is_a_size_of_at_least_one_kib() {
    let c = run(&[OUT, "--query-memory-budget", "384MiB"]).unwrap();
    assert_eq!(c.query_memory_budget, Some(384 << 20));
    let c = run(&[OUT, "--query-memory-budget=1KiB"]).unwrap();
    assert_eq!(c.query_memory_budget, Some(1024));
    for bad in ["1000", "lots", "0"] {
        let e = cli(&["run", OUT, "--query-memory-budget", bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--query-memory-budget"), "{bad}: {e}");
    }
}

#[test]
fn kubernetes_writes_are_rate_limited_by_default_and_by_flag() {
    let c = run(&[OUT, "--pod-name=adxexporter-0"]).unwrap();
    assert_eq!(
        c.kube,
        run::KubeSettings {
            status_patch_qps: 20.0,
            status_patch_burst: 50,
            event_qps: 5.0,
            event_burst: 25,
            pod_name: Some("adxexporter-0".into()),
        }
    );
    let c = run(&[
        OUT,
        "--status-patch-qps=0.5",
        "--status-patch-burst=1",
        "--event-qps",
        "2",
        "--event-burst",
        "3",
    ])
    .unwrap();
    assert_eq!(
        (
            c.kube.status_patch_qps,
            c.kube.status_patch_burst,
            c.kube.event_qps,
            c.kube.event_burst
        ),
        (0.5, 1, 2.0, 3)
    );
    for bad in [
        "--status-patch-qps=0",
        "--status-patch-qps=-1",
        "--status-patch-qps=inf",
        "--status-patch-qps=NaN",
        "--status-patch-burst=0",
        "--event-qps=fast",
        "--event-burst=0",
    ] {
        let e = cli(&["run", OUT, bad]).unwrap_err().to_string();
        let flag = bad.split('=').next().unwrap();
        assert!(e.contains(flag), "{bad}: {e}");
    }
}

#[test]
fn kusto_auth_is_parsed_by_validation() {
    let c = run(&[OUT, "--kusto-auth", "token-file:/run/token"]).unwrap();
    assert_eq!(c.kusto.auth, KustoAuth::TokenFile("/run/token".into()));
    let e = run(&[OUT, "--kusto-auth", "nonee"])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--kusto-auth: ") && e.contains("\"nonee\"") && e.contains("token-file:PATH"),
        "{e}"
    );
    let preview = match cli(&["preview", "-f", "x.yaml", "--kusto-auth", "token-file:"]).unwrap() {
        Command::Preview(a) => a.validate(),
        _ => unreachable!(),
    };
    assert!(matches!(preview, Err(CliError::Invalid { flag, .. }) if flag == "--kusto-auth"));
}

#[test]
fn replicas_take_the_ordinal_from_the_pod_name() {
    let c = run(&[OUT, "--pod-name=laptop"]).unwrap();
    assert_eq!(c.source.membership, Membership::Fixed(Shard::SINGLE));
    let c = run(&[OUT, "--replicas=3", "--pod-name=adxexporter-2"]).unwrap();
    assert_eq!(
        c.source.membership,
        Membership::Fixed(Shard {
            ordinal: 2,
            replicas: 3
        })
    );
    let err = run(&[OUT, "--replicas", "3", "--pod-name", "laptop"]).unwrap_err();
    assert!(
        matches!(err, CliError::Shard(ShardError::NoOrdinal { .. })),
        "{err}"
    );
    assert!(cli(&[OUT, "--replicas=0"]).is_err());
    let err = run(&[OUT, "--replicas=2", "--manifests=/x"]).unwrap_err();
    assert_eq!(err, CliError::ReplicasWithManifests(2));
}

#[test]
fn without_replicas_a_statefulset_pod_follows_its_statefulset() {
    let c = run(&[OUT, "--pod-name=adxexporter-1"]).unwrap();
    assert_eq!(
        c.source.membership,
        Membership::StatefulSet {
            name: "adxexporter".into(),
            namespace: None,
            ordinal: 1
        }
    );
    let c = run(&[
        OUT,
        "--pod-name=pod-4",
        "--statefulset=fleet",
        "--pod-namespace=monitoring",
    ])
    .unwrap();
    assert_eq!(
        c.source.membership,
        Membership::StatefulSet {
            name: "fleet".into(),
            namespace: Some("monitoring".into()),
            ordinal: 4
        }
    );
    let err = run(&[OUT, "--statefulset=fleet", "--pod-name=laptop"]).unwrap_err();
    assert!(
        matches!(
            err,
            CliError::Shard(ShardError::StatefulSetNoOrdinal { .. })
        ),
        "{err}"
    );
    // Standalone mode never reads a StatefulSet.
    let dir = tempfile::tempdir().unwrap();
    let manifests = format!("--manifests={}", dir.path().display());
    let c = run(&[OUT, &manifests, "--pod-name=adxexporter-1"]).unwrap();
    assert_eq!(c.source.membership, Membership::Fixed(Shard::SINGLE));
}

#[test]
fn lists_are_comma_separated_and_repeatable() {
    let c = run(&[
        OUT,
        "--cluster-labels=region=eastus, env = prod",
        "--cluster-labels",
        "cloud=public",
        "--kusto-endpoint=a=https://a.kusto.windows.net,b=https://b.kusto.windows.net",
        "--kusto-endpoints",
        "c=http://127.0.0.1:8082",
    ])
    .unwrap();
    assert_eq!(
        c.source.cluster_labels,
        BTreeMap::from([
            ("cloud".into(), "public".into()),
            ("env".into(), "prod".into()),
            ("region".into(), "eastus".into()),
        ])
    );
    let dbs: Vec<&str> = c.kusto.endpoints.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(dbs, ["a", "b", "c"]);
}

#[test]
fn url_with_equals_in_its_query_survives() {
    let c = run(&[OUT, "--kusto-endpoint", "db=https://x.example/?a=b&c=d"]).unwrap();
    assert_eq!(c.kusto.endpoints[0].0, "db");
    assert_eq!(
        c.kusto.endpoints[0].1.as_str(),
        "https://x.example/?a=b&c=d"
    );
}

#[test]
fn malformed_pairs_are_named() {
    assert_eq!(
        run(&[OUT, "--kusto-endpoint", "nodb"])
            .unwrap_err()
            .to_string(),
        "--kusto-endpoint: \"nodb\" is not DB=URL"
    );
    assert_eq!(
        run(&[OUT, "--cluster-labels", "region=eastus,=x"])
            .unwrap_err()
            .to_string(),
        "--cluster-labels: \"=x\" has an empty key"
    );
    assert_eq!(
        run(&[OUT, "--kusto-endpoint", "a=ftp://x"])
            .unwrap_err()
            .to_string(),
        "--kusto-endpoint: \"a=ftp://x\": use an http:// or https:// URL with a host"
    );
}

#[test]
fn duplicates_are_errors() {
    assert_eq!(
        run(&[OUT, "--kusto-endpoint", "a=http://x,a=http://y"]).unwrap_err(),
        CliError::DuplicateKey {
            flag: "--kusto-endpoint",
            key: "a".into()
        }
    );
    assert_eq!(
        run(&[OUT, "--cluster-labels", "Region=a,region=b"]).unwrap_err(),
        CliError::DuplicateKey {
            flag: "--cluster-labels",
            key: "region".into()
        }
    );
}

#[test]
fn cluster_labels_must_make_distinct_kql_variables() {
    assert_eq!(
        run(&[OUT, "--cluster-labels", "a-b=1,a_b=2"])
            .unwrap_err()
            .to_string(),
        "--cluster-labels: \"a-b\" and \"a_b\" both become KQL variable _a_b: rename one"
    );
    assert_eq!(
        run(&[OUT, "--cluster-labels", "startTime=x"])
            .unwrap_err()
            .to_string(),
        "--cluster-labels: \"startTime\" would redefine _startTime, which holds the window: rename it"
    );
    assert!(matches!(
        run(&[OUT, "--cluster-labels", "a=x\u{7}y"]),
        Err(CliError::ControlCharacter { .. })
    ));
}

#[test]
fn an_output_is_required() {
    let err = run(&[]).unwrap_err();
    assert_eq!(err, CliError::NoOutput);
    assert!(err.to_string().contains("--otlp-endpoint"));
    assert!(run(&["--remote-write-endpoint", "http://p:9090/api/v1/write"]).is_ok());
}

#[test]
fn grpc_and_scrape_are_outputs_of_their_own() {
    let c = run(&["--otlp-grpc-endpoint", "http://collector:4317"]).unwrap();
    assert_eq!(
        c.outputs.otlp_grpc.unwrap().endpoint.as_str(),
        "http://collector:4317/"
    );
    assert_eq!(c.outputs.scrape, None, "scrape is off by default");
    let c = run(&["--scrape-port", "9464"]).unwrap();
    let scrape = c.outputs.scrape.unwrap();
    assert_eq!(scrape.addr.port(), 9464);
    assert_eq!(scrape.page.path, "/metrics");
    assert!(!scrape.page.timestamps);
    let c = run(&[
        "--scrape-port=:9464",
        "--scrape-path=/kusto",
        "--scrape-timestamps",
    ])
    .unwrap();
    let page = c.outputs.scrape.unwrap().page;
    assert_eq!((page.path.as_str(), page.timestamps), ("/kusto", true));
    let c = run(&["--otlp-grpc-endpoint", "https://collector:4317"]).unwrap();
    assert_eq!(c.outputs.otlp_grpc.unwrap().endpoint.scheme(), "https");
    for (flag, url) in [
        ("--otlp-grpc-endpoint", "https://u:s3cret@collector:4317"),
        ("--remote-write-endpoint", "https://u:s3cret@p/api/v1/write"),
    ] {
        let e = run(&[flag, url]).unwrap_err().to_string();
        assert!(
            e.contains("basic-auth-username") && !e.contains("s3cret"),
            "{e}"
        );
    }
    let e = run(&["--otlp-grpc-endpoint", "collector:4317"]).unwrap_err();
    assert!(e.to_string().contains("--otlp-grpc-endpoint"), "{e}");
    let e = run(&["--scrape-port", "8080"]).unwrap_err();
    assert!(e.to_string().contains("--metrics-port"), "{e}");
    let e = run(&["--scrape-port", "9464", "--scrape-path", "metrics"]).unwrap_err();
    assert_eq!(e, CliError::BadScrapePath("metrics".into()));
}

#[test]
fn resource_attributes_overlay_cluster_labels() {
    let c = run(&[
        OUT,
        "--cluster-labels",
        "a=1,b=2",
        "--add-resource-attributes",
        "b=3,c=4",
    ])
    .unwrap();
    assert_eq!(
        c.outputs.otlp.unwrap().resource_attributes,
        BTreeMap::from([
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
            ("c".into(), "4".into())
        ])
    );
}

#[test]
fn sizes_parse_with_suffixes() {
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size("4MB"), Ok(4_000_000));
    assert_eq!(parse_size("1.5KiB"), Ok(1536));
    assert_eq!(parse_size("1000"), Ok(1000));
    assert_eq!(parse_size("64 kib"), Ok(65536));
    assert!(parse_size("0").is_err());
    assert!(parse_size("1XB").is_err());
    assert!(parse_size("").is_err());
    assert!(cli(&[OUT, "--wal-max-bytes", "lots"]).is_err());
}

#[test]
fn probe_ports_accept_adx_mon_form() {
    assert_eq!(parse_listen_addr(":8081").unwrap().port(), 8081);
    assert_eq!(parse_listen_addr("9000").unwrap().port(), 9000);
    assert_eq!(
        parse_listen_addr("127.0.0.1:7000").unwrap(),
        "127.0.0.1:7000".parse::<SocketAddr>().unwrap()
    );
    assert!(parse_listen_addr("eighty").is_err());
    let c = run(&[OUT, "--health-probe-port", ":9091"]).unwrap();
    assert_eq!(c.telemetry.health_probe_addr.port(), 9091);
}

#[test]
fn numbers_and_durations_are_checked() {
    assert!(cli(&[OUT, "--max-concurrent-queries", "0"]).is_err());
    assert!(cli(&[OUT, "--shutdown-grace", "-1s"]).is_err());
    assert!(cli(&[OUT, "--kusto-server-timeout", "0s"]).is_err());
    assert!(cli(&[OUT, "--log-format", "xml"]).is_err());
    assert_eq!(
        run(&[OUT, "--log-format", "json"])
            .unwrap()
            .telemetry
            .log_format,
        LogFormat::Json
    );
}

#[test]
fn preview_needs_both_or_neither_bound() {
    assert!(cli(&["preview", "-f", "x.yaml", "--start", "2026-01-01T00:00:00Z"]).is_err());
    let args = match cli(&[
        "preview",
        "-f",
        "x.yaml",
        "--start",
        "2026-01-01T00:05:00Z",
        "--end",
        "2026-01-01T00:00:00Z",
    ])
    .unwrap()
    {
        Command::Preview(a) => a,
        _ => unreachable!(),
    };
    assert!(matches!(args.validate(), Err(CliError::EmptyWindow { .. })));
    let args = match cli(&[
        "preview",
        "-f",
        "x.yaml",
        "--start",
        "2026-01-01T00:00:00Z",
        "--end",
        "2026-01-01T00:05:00Z",
        "--now",
        "2026-01-02T00:00:00Z",
    ])
    .unwrap()
    {
        Command::Preview(a) => a,
        _ => unreachable!(),
    };
    let p = args.validate().unwrap();
    assert_eq!(
        p.window,
        Some((
            Ticks::parse("2026-01-01T00:00:00Z").unwrap(),
            Ticks::parse("2026-01-01T00:05:00Z").unwrap()
        ))
    );
    assert_eq!(p.now, Ticks::parse("2026-01-02T00:00:00Z").ok());
}

#[test]
fn check_takes_files_and_optional_labels() {
    let args = match cli(&[
        "check",
        "--cluster-labels",
        "region=eastus",
        "a.yaml",
        "b.yaml",
    ])
    .unwrap()
    {
        Command::Check(a) => a,
        _ => unreachable!(),
    };
    assert_eq!(args.files.len(), 2);
    assert_eq!(args.labels().unwrap().unwrap()["region"], "eastus");
    assert!(cli(&["check"]).is_err());
}

#[test]
fn check_goes_online_only_with_an_endpoint() {
    let check = |args: &[&str]| match cli(args).unwrap() {
        Command::Check(a) => a,
        _ => unreachable!(),
    };
    let offline = check(&["check", "--kusto-auth", "no-such-mode", "a.yaml"]);
    assert_eq!(offline.online(), Ok(None), "no Kusto flag is read offline");
    let online = check(&[
        "check",
        "--kusto-endpoint",
        "db=https://c.kusto.windows.net",
        "--kusto-auth",
        "none",
        "a.yaml",
    ]);
    let settings = online.online().unwrap().unwrap();
    assert_eq!(
        settings.endpoint("db").map(url::Url::as_str),
        Some("https://c.kusto.windows.net/")
    );
    assert_eq!(settings.endpoint("other"), None);
    let bad = check(&["check", "--kusto-endpoint", "db=x", "a.yaml"]);
    assert!(matches!(bad.online(), Err(CliError::BadUrl { .. })));
}

#[test]
fn preview_reads_a_saved_response_or_keeps_the_live_one() {
    let preview = |args: &[&str]| match cli(args) {
        Ok(Command::Preview(a)) => a.validate().map(|c| c.response),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        preview(&["preview", "-f", "x.yaml"]),
        Ok(ResponseSource::Kusto { save: None })
    );
    assert_eq!(
        preview(&["preview", "-f", "x.yaml", "--save-response", "r.json"]),
        Ok(ResponseSource::Kusto {
            save: Some("r.json".into())
        })
    );
    assert_eq!(
        preview(&["preview", "-f", "x.yaml", "--response", "r.json"]),
        Ok(ResponseSource::File("r.json".into()))
    );
    let both = [
        "preview",
        "-f",
        "x.yaml",
        "--response",
        "a",
        "--save-response",
        "b",
    ];
    assert!(cli(&both).is_err());
}

#[test]
fn clap_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}
