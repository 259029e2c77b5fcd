//! The `adxexporter` binary end to end: `crd`, `check`, and `run`'s flag validation.
mod common;

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_adxexporter");
const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/crds/metricsexporters.yaml"
);
const RESOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/resources");

/// Runs the binary in `tests/resources` with no `ADXEXPORTER_*` variables from the outside.
fn adxexporter(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(RESOURCES);
    for (key, _) in std::env::vars() {
        if key.starts_with("ADXEXPORTER_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run adxexporter")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn crd_output_matches_the_committed_file() {
    let out = adxexporter(&["crd"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let committed = std::fs::read_to_string(CRD_FILE).expect("read the committed CRD");
    assert!(
        stdout(&out) == committed,
        "deploy/crds/metricsexporters.yaml is stale: run `cargo run -- crd > deploy/crds/metricsexporters.yaml`"
    );
}

#[test]
fn committed_crd_parses_back_to_the_generated_one() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    let committed = std::fs::read_to_string(CRD_FILE).expect("read the committed CRD");
    let parsed: CustomResourceDefinition =
        serde_saphyr::from_str(&committed).expect("the committed CRD is valid YAML");
    assert_eq!(parsed, adxexporter::crd::MetricsExporter::crd());
    let names = &parsed.spec.names;
    assert_eq!(
        names.short_names.as_deref(),
        Some(&["mexp".to_string()][..])
    );
    assert_eq!(parsed.spec.scope, "Namespaced");
}

#[test]
fn check_accepts_adx_mon_and_design_style_resources() {
    let out = adxexporter(
        &[
            "check",
            "good-adx-mon.yaml",
            "good-design.yaml",
            "good.json",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "ok monitoring/service-health\n\
         good-adx-mon.yaml: monitoring/service-health: note: spec.body: uses _region, which only cluster labels define (region=…): on an instance without them the query fails with \"column not found\" (unless they are columns of the table or defined in the body); give check --cluster-labels to verify (a textual check: comments and string literals are ignored, KQL is not parsed)\n\
         ok default/cpu\nok infra/mem\nok default/json-one\n"
    );
}

#[test]
fn check_with_cluster_labels_says_where_resources_run() {
    let out = adxexporter(
        &[
            "check",
            "--cluster-labels",
            "Region=EastUS,environment=production",
            "good-adx-mon.yaml",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    // Criteria match label keys case-insensitively; KQL variables are case-sensitive: the label
    // `Region` defines `_Region`, not the `_region` the body uses.
    assert_eq!(
        stdout(&out),
        "ok monitoring/service-health: would run here (criteria match)\n\
         good-adx-mon.yaml: monitoring/service-health: warning: spec.body: uses _region, which these --cluster-labels do not define (the query prefix defines _startTime, _endTime, _Region, _environment): unless it is a column of the table or defined in the body, the query fails with \"column not found\": add the cluster label region=… or fix the name (case-sensitive) (a textual check: comments and string literals are ignored, KQL is not parsed)\n"
    );

    let out = adxexporter(
        &["check", "good-adx-mon.yaml"],
        &[(
            "ADXEXPORTER_CLUSTER_LABELS",
            "region=northeurope,environment=production",
        )],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "ok monitoring/service-health: skipped here: criteria region=[eastus,westus] does not match cluster label region=northeurope\n"
    );
}

#[test]
fn check_evaluates_criteria_expression_against_the_cluster_labels() {
    let check =
        |labels: &str| adxexporter(&["check", "--cluster-labels", labels, "good-cel.yaml"], &[]);
    let out = adxexporter(&["check", "good-cel.yaml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "ok monitoring/cel-health\n");

    let out = check("region=westus,environment=Production,cloud=AzureCloud");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "ok monitoring/cel-health: would run here (criteria match)\n"
    );

    // criteria match (case-insensitive), the expression does not: skipped, not a problem.
    let out = check("region=eastus,environment=production,cloud=AzureChinaCloud");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "ok monitoring/cel-health: skipped here: criteriaExpression region in ['eastus', 'westus'] && !cloud.startsWith('AzureChina') is false for cluster labels cloud=AzureChinaCloud,environment=production,region=eastus\n"
    );

    // CEL names are case-sensitive (as in adx-mon's code): `Region` does not declare `region`.
    let out = check("Region=eastus,environment=production");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "good-cel.yaml: monitoring/cel-health: spec.criteriaExpression: refers to cloud, region, which are not cluster labels of this instance (it has: Region, environment): add them to --cluster-labels or remove them from the expression (names are case-sensitive)\n"
    );

    // The criteria map excludes this instance first: the expression is not its business.
    let out = check("Region=eastus,environment=staging");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("skipped here: criteria environment=[production]"));
}

#[test]
fn check_reports_every_problem_with_file_resource_and_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "bad-interval.yaml",
            &[
                "bad-interval.yaml: default/zero: spec.interval: \"0s\" is too short: use at least 1s",
            ],
        ),
        (
            "bad-missing-body.yaml",
            &["bad-missing-body.yaml: default/nobody: spec.body: missing: set the KQL query"],
        ),
        (
            "bad-start-time.yaml",
            &[
                "bad-start-time.yaml: default/when: spec.startTime: \"yesterday\" is not an RFC 3339 datetime: use e.g. 2026-01-01T00:00:00Z",
            ],
        ),
        (
            "bad-labels.yaml",
            &[
                "bad-labels.yaml: default/reserved: spec.transform.labelColumns: \"__name__\" becomes label \"__name__\", and names starting with __ are reserved: rename the column in the query",
                "bad-labels.yaml: default/colliding: spec.transform.labelColumns: \"a-b\" and \"a_b\" both become label \"a_b\": rename one in the query",
            ],
        ),
        (
            "bad-two-problems.yaml",
            &[
                "bad-two-problems.yaml: team/twice: spec.interval: \"500ms\" is too short: use at least 1s",
                "bad-two-problems.yaml: team/twice: spec.transform: set valueColumns (or valueColumn)",
            ],
        ),
        (
            "bad-kind.yaml",
            &[
                "bad-kind.yaml: document 1: apiVersion \"v1\" kind \"ConfigMap\" is not a MetricsExporter (expected apiVersion adx-mon.azure.com/v1, kind MetricsExporter)",
            ],
        ),
        (
            "bad-cel-syntax.yaml",
            &[
                "bad-cel-syntax.yaml: monitoring/cel-typo: spec.criteriaExpression: \"region = 'eastus'\" is not valid CEL: <input>:1:8: Syntax error: token recognition error at: '= '; <input>:1:10: Syntax error: extraneous input ''eastus'' expecting <EOF>: fix the syntax, e.g. region == 'eastus' && environment in ['prod', 'staging']",
            ],
        ),
        (
            "bad-types.yaml",
            &[
                "bad-types.yaml: default/histogram-without-buckets: spec.transform.bucketColumn: missing: a histogram needs the column holding each row's bucket upper bound (real, +inf allowed)",
                "bad-types.yaml: default/names: spec.transform.nameStyle: \"camel\" is not a name style: use prometheus (the default) or adxmon",
                "bad-types.yaml: default/names: spec.transform.metricNames.hits: \"bad name\" is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*): use e.g. \"bad_name\"",
                "bad-types.yaml: default/names: spec.transform.metricNamePrefix: \"---\" has no letter or digit, so every name would start with `_`s: use e.g. `app`",
                "bad-types.yaml: default/names: spec.transform.staticLabels.team-name: \"team-name\" is not a label name ([a-zA-Z_][a-zA-Z0-9_]*): use e.g. \"team_name\"",
            ],
        ),
        (
            "bad-backfill.yaml",
            &[
                "bad-backfill.yaml: default/backfill-three: spec.backfill.requestId: missing: name the backfill (a new value restarts it), e.g. fix-2026-03-01",
                "bad-backfill.yaml: default/backfill-three: spec.backfill.endTime: 2026-03-01T00:00:00Z is not after startTime 2026-03-02T00:00:00Z: the range is [startTime, endTime)",
                "bad-backfill.yaml: default/backfill-three: spec.backfill.maxInFlight: 0 queries never finish the backfill: use at least 1 (default 1)",
                "bad-backfill.yaml: default/backfill-times: spec.backfill.startTime: \"last tuesday\" is not an RFC 3339 datetime: use e.g. 2026-01-01T00:00:00Z",
                "bad-backfill.yaml: default/backfill-times: spec.backfill.endTime: missing: an RFC 3339 datetime, e.g. 2026-01-01T00:00:00Z",
            ],
        ),
        (
            "bad-syntax.yaml",
            &[
                "bad-syntax.yaml: not valid YAML or JSON: line 4 column 5: while parsing a flow mapping, did not find expected ',' or '}'",
            ],
        ),
    ];
    for (file, lines) in cases {
        let out = adxexporter(&["check", file], &[]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", stdout(&out));
        let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(stdout(&out), expected, "{file}");
    }
}

#[test]
fn check_accepts_counters_and_histograms() {
    let out = adxexporter(&["check", "good-types.yaml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "ok default/requests\nok default/latency\n");
}

#[test]
fn check_of_good_and_bad_files_together_fails_but_reports_both() {
    let out = adxexporter(
        &["check", "good.json", "bad-interval.yaml", "missing.yaml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with("ok default/json-one\nbad-interval.yaml: default/zero: spec.interval:"),
        "{text}"
    );
    assert!(text.contains("missing.yaml: cannot read: "), "{text}");
}

#[test]
fn check_warns_about_a_body_without_the_window_and_label_columns_that_repeat_value_or_time() {
    let out = adxexporter(&["check", "warn-window-and-labels.yaml"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "warnings only: {}",
        stdout(&out)
    );
    assert_eq!(
        stdout(&out),
        "ok default/whole-table\n\
         warn-window-and-labels.yaml: default/whole-table: warning: spec.body: never uses _startTime or _endTime, so every window queries the whole table: each window exports every row again, which receivers refuse as duplicate or out-of-order samples (dead letters): filter on the window, e.g. `| where Timestamp between (_startTime .. _endTime)` (a textual check: comments and string literals are ignored, KQL is not parsed)\n\
         warn-window-and-labels.yaml: default/whole-table: warning: spec.transform.labelColumns: \"Value\" is also a value column, so every distinct value becomes its own series with one sample (`run` accepts it: the label holds the value as text, and the series count grows with every new value): remove \"Value\" from labelColumns\n\
         warn-window-and-labels.yaml: default/whole-table: warning: spec.transform.labelColumns: \"Timestamp\" is also the timestampColumn, so every timestamp becomes its own series with one sample (`run` accepts it: the label holds the time as text, and every window starts new series): remove \"Timestamp\" from labelColumns\n"
    );
}

#[test]
fn check_reports_the_same_resource_in_two_files_naming_both() {
    let out = adxexporter(&["check", "good.json", "dup-json-one.yaml"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "ok default/json-one\n\
         dup-json-one.yaml: default/json-one: metadata.name: default/json-one is also defined in good.json (document 1): `run --manifests` runs only the first by file name and reports the others as invalid: rename one (metadata.name or metadata.namespace) or delete the copy\n"
    );
}

#[test]
fn check_with_cluster_labels_names_body_variables_they_do_not_define() {
    let out = adxexporter(
        &[
            "check",
            "--cluster-labels",
            "region=eastus,environment=production",
            "good-adx-mon.yaml",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "ok monitoring/service-health: would run here (criteria match)\n",
        "`region` defines `_region`"
    );
    let out = adxexporter(
        &[
            "check",
            "--cluster-labels",
            "environment=production",
            "good-adx-mon.yaml",
        ],
        &[],
    );
    assert!(
        stdout(&out).contains(": warning: spec.body: uses _region, which these --cluster-labels do not define (the query prefix defines _startTime, _endTime, _environment): "),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_says_a_yaml_boolean_or_number_in_a_text_field_must_be_quoted() {
    let out = adxexporter(&["check", "bad-yaml-booleans.yaml"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "bad-yaml-booleans.yaml: document 1 (default/booleans): spec.transform.labelColumns[0]: on was read as the boolean true, not as text (YAML reads unquoted y, n, yes, no, on and off as booleans): quote it: \"on\"\n\
         bad-yaml-booleans.yaml: document 1 (default/booleans): spec.transform.labelColumns[1]: 5 was read as a number, not as text: quote it: \"5\"\n\
         bad-yaml-booleans.yaml: document 1 (default/booleans): spec.transform.valueColumns[1]: N was read as the boolean false, not as text (YAML reads unquoted y, n, yes, no, on and off as booleans): quote it: \"N\"\n"
    );
}

/// A directory as `run --manifests` sees it: two manifests, a file of another kind, and the paths
/// with a manifest's name that are not read (a dangling symlink, a symlink loop, a directory).
fn manifest_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let resources = std::path::Path::new(RESOURCES);
    std::fs::copy(resources.join("good.json"), dir.path().join("a.json")).unwrap();
    std::fs::copy(resources.join("good-cel.yaml"), dir.path().join("b.yml")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    std::os::unix::fs::symlink("gone.yaml", dir.path().join("dangling.yaml")).unwrap();
    std::os::unix::fs::symlink("loop.yaml", dir.path().join("loop.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("old.yaml")).unwrap();
    dir
}

#[test]
fn check_of_a_directory_reads_it_as_run_does_and_names_every_path_it_skips() {
    let dir = manifest_dir();
    let d = dir.path().display().to_string();
    let out = adxexporter(&["check", &d], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{d}: reading 2 files as `run --manifests` would: a.json, b.yml\n\
             {d}/dangling.yaml: not read: a dangling symlink (-> gone.yaml, which does not exist): fix or remove the link\n\
             {d}/loop.yaml: not read: a symlink loop (-> loop.yaml never reaches a file): fix or remove the link\n\
             {d}/old.yaml: not read: a directory, not a file (--manifests reads only the files directly in it): move its files up or rename it\n\
             ok default/json-one\n\
             ok monitoring/cel-health\n"
        )
    );
    // Without the unreadable paths it passes.
    for path in ["dangling.yaml", "loop.yaml"] {
        std::fs::remove_file(dir.path().join(path)).unwrap();
    }
    std::fs::remove_dir(dir.path().join("old.yaml")).unwrap();
    let out = adxexporter(&["check", &d], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let empty = tempfile::tempdir().unwrap();
    let out = adxexporter(&["check", &empty.path().display().to_string()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(": no *.yaml, *.yml or *.json file directly in this directory"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn run_manifests_warns_about_unknown_fields_and_paths_it_does_not_read() {
    let dir = manifest_dir();
    let manifests = dir.path();
    std::fs::write(
        manifests.join("c.yaml"),
        std::fs::read_to_string(std::path::Path::new(RESOURCES).join("good-design.yaml"))
            .unwrap()
            .replace("  ingestionDelay: 2m\n", "  ingestionDelai: 2m\n"),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log");
    let wal = work.path().join("wal");
    let port = || common::free_port().to_string();
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("ADXEXPORTER_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args(["run", "--manifests"])
        .arg(manifests)
        .arg("--wal-dir")
        .arg(&wal)
        .args([
            "--kusto-endpoint",
            "Metrics=http://127.0.0.1:9",
            "--kusto-auth",
            "none",
        ])
        .args(["--scrape-port", &port(), "--metrics-port", &port()])
        .args(["--health-probe-port", &port()])
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(work.path().join("stderr")).unwrap())
        .spawn()
        .expect("start adxexporter run");
    let m = manifests.display();
    let expected_log = [
        format!(
            "WARN adxexporter::source::manifests: spec.ingestionDelai: unknown field, ignored: did you mean spec.ingestionDelay? file={m}/c.yaml exporter=default/cpu"
        ),
        format!(
            "WARN adxexporter::source: not read: a dangling symlink (-> gone.yaml, which does not exist): fix or remove the link file={m}/dangling.yaml"
        ),
        format!(
            "WARN adxexporter::source: not read: a symlink loop (-> loop.yaml never reaches a file): fix or remove the link file={m}/loop.yaml"
        ),
        format!(
            "WARN adxexporter::source: not read: a directory, not a file (--manifests reads only the files directly in it): move its files up or rename it file={m}/old.yaml"
        ),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (text, status) = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(work.path().join("stderr")).unwrap_or_default();
        let status: Option<serde_json::Value> = std::fs::read(wal.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let done = expected_log.iter().all(|l| text.contains(l.as_str()))
            && status
                .as_ref()
                .is_some_and(|s| s.get(format!("{m}/old.yaml")).is_some());
        if done || std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break (text, status.unwrap_or_default());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    for line in &expected_log {
        assert!(text.contains(line.as_str()), "missing {line:?} in\n{text}");
    }
    // Each skipped path is in status.json like an invalid resource, keyed by its path.
    for (path, why) in [
        ("dangling.yaml", "not read: a dangling symlink"),
        ("loop.yaml", "not read: a symlink loop"),
        ("old.yaml", "not read: a directory, not a file"),
    ] {
        let ready = &status[format!("{m}/{path}")]["conditions"][0];
        assert_eq!(ready["type"], "Ready", "{status}");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "FileSkipped");
        assert!(
            ready["message"].as_str().unwrap().starts_with(why),
            "{ready}"
        );
    }
}

#[test]
fn run_without_an_output_says_which_flags_to_set() {
    let out = adxexporter(
        &["run", "--kusto-endpoint", "db=https://x.kusto.windows.net"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no output configured: set at least one of --otlp-endpoint URL (ADXEXPORTER_OTLP_ENDPOINT), --remote-write-endpoint URL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_keeps_a_url_with_equals_signs() {
    let out = adxexporter(
        &[
            "run",
            "--otlp-endpoint",
            "http://c:4318/v1/metrics",
            "--kusto-endpoint",
            "db=https://x/?a=b",
            // Stop right after start-up: the WAL directory cannot be created.
            "--wal-dir",
            "/dev/null/wal",
            "--metrics-port",
            "127.0.0.1:0",
            "--health-probe-port",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("kusto endpoints: db=https://x/?a=b"), "{err}");
    assert!(
        err.contains("cannot create --wal-dir /dev/null/wal"),
        "{err}"
    );
}

#[test]
fn a_bad_kusto_auth_stops_run_before_the_wal_is_created() {
    let manifests = tempfile::tempdir().unwrap();
    let wal = tempfile::tempdir().unwrap();
    let out = adxexporter(
        &[
            "run",
            "--kusto-auth",
            "nonee",
            "--manifests",
            manifests.path().to_str().unwrap(),
            "--wal-dir",
            wal.path().to_str().unwrap(),
            "--otlp-endpoint",
            "http://127.0.0.1:1/v1/metrics",
            "--kusto-endpoint",
            "db=http://127.0.0.1:1",
            "--metrics-port",
            "127.0.0.1:0",
            "--health-probe-port",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--kusto-auth")
            && err.contains("\"nonee\"")
            && err.contains("token-file:PATH"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(wal.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the WAL dir should be untouched: {left:?}");
}

#[test]
fn run_reads_every_flag_from_the_environment() {
    let out = adxexporter(
        &[],
        &[
            ("ADXEXPORTER_OTLP_ENDPOINT", "http://c:4318/v1/metrics"),
            (
                "ADXEXPORTER_KUSTO_ENDPOINT",
                "a=https://a/?x=y,b=http://127.0.0.1:1",
            ),
            ("ADXEXPORTER_CLUSTER_LABELS", "region=eastus"),
            ("ADXEXPORTER_WAL_MAX_BYTES", "512MiB"),
            ("ADXEXPORTER_HEALTH_PROBE_PORT", "127.0.0.1:0"),
            ("ADXEXPORTER_METRICS_PORT", "127.0.0.1:0"),
            ("ADXEXPORTER_WAL_DIR", "/dev/null/wal"),
        ],
    );
    let err = stderr(&out);
    assert!(
        err.contains("kusto endpoints: a=https://a/?x=y,b=http://127.0.0.1:1/"),
        "{err}"
    );

    let out = adxexporter(
        &[],
        &[
            ("ADXEXPORTER_OTLP_ENDPOINT", "http://c"),
            ("ADXEXPORTER_KUSTO_ENDPOINT", "nodb"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--kusto-endpoint: \"nodb\" is not DB=URL"),
        "{}",
        stderr(&out)
    );

    let out = adxexporter(
        &[],
        &[
            ("ADXEXPORTER_OTLP_ENDPOINT", "http://c"),
            ("ADXEXPORTER_WAL_MAX_BYTES", "huge"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--wal-max-bytes"), "{}", stderr(&out));
}

#[test]
fn every_run_flag_has_help_and_env() {
    let out = adxexporter(&["run", "--help"], &[]);
    let help = stdout(&out);
    for flag in [
        "--cluster-labels",
        "--kusto-endpoint",
        "--kusto-auth",
        "--otlp-endpoint",
        "--remote-write-endpoint",
        "--add-resource-attributes",
        "--metric-name-prefix",
        "--wal-dir",
        "--wal-max-bytes",
        "--metrics-port",
        "--health-probe-port",
        "--manifests",
        "--namespace",
        "--max-concurrent-queries",
        "--query-memory-budget",
        "--max-request-bytes",
        "--shutdown-grace",
        "--log-format",
        "--kusto-server-timeout",
        "--otlp-grpc-endpoint",
        "--scrape-port",
        "--scrape-path",
        "--scrape-timestamps",
        "--wal-min-free-bytes",
        "--remote-write-header",
        "--remote-write-auth",
        "--remote-write-bearer-token-file",
        "--remote-write-basic-auth-username",
        "--remote-write-basic-auth-password-file",
        "--remote-write-azure-scope",
        "--otlp-header",
        "--otlp-auth",
        "--otlp-bearer-token-file",
        "--otlp-basic-auth-username",
        "--otlp-basic-auth-password-file",
        "--otlp-azure-scope",
        "--tls-ca-file",
        "--tls-insecure-skip-verify",
        "--tls-client-cert",
        "--tls-client-key",
        "--replicas",
        "--pod-name",
        "--status-patch-qps",
        "--status-patch-burst",
        "--event-qps",
        "--event-burst",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        let env = format!(
            "ADXEXPORTER_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(help.contains(&env), "{env} missing from --help");
    }
}

#[test]
fn preview_is_a_subcommand_with_its_flags() {
    let out = adxexporter(
        &[
            "preview",
            "--start",
            "2026-01-01T00:00:00Z",
            "-f",
            "good.json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--end"), "{}", stderr(&out));
}

#[test]
fn run_variables_never_break_other_subcommands() {
    let out = adxexporter(
        &["check", "good.json"],
        &[("ADXEXPORTER_WAL_MAX_BYTES", "huge")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = adxexporter(&["crd"], &[("ADXEXPORTER_OTLP_ENDPOINT", "not a url")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn top_level_help_lists_the_subcommands() {
    let out = adxexporter(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for sub in ["run", "preview", "check", "crd"] {
        assert!(
            help.contains(&format!("\n  {sub} ")),
            "{sub} missing:\n{help}"
        );
    }
}

#[test]
fn top_level_help_names_every_output() {
    for flag in ["--help", "-h"] {
        let out = adxexporter(&[flag], &[]);
        assert_eq!(out.status.code(), Some(0));
        // Words, not lines: the help is wrapped to the terminal's width.
        let help = stdout(&out)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for output in [
            "Prometheus remote write",
            "OTLP/HTTP",
            "OTLP/gRPC",
            "Prometheus scrape page",
        ] {
            assert!(help.contains(output), "{flag}: {output} missing:\n{help}");
        }
    }
}

#[test]
fn run_help_reads_in_sections_by_topic() {
    let out = adxexporter(&["run", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    let headings = [
        "Sources",
        "Kusto",
        "Outputs",
        "WAL",
        "Kubernetes",
        "Telemetry",
    ];
    let starts: Vec<usize> = (headings.iter())
        .map(|h| {
            help.find(&format!("\n{h}:\n"))
                .unwrap_or_else(|| panic!("no {h} section:\n{help}"))
        })
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "sections not in the order {headings:?}:\n{help}"
    );
    // The flag lines of one section, from its heading to the next.
    let section = |name: &str| -> Vec<&str> {
        let i = headings.iter().position(|h| *h == name).unwrap();
        let end = starts.get(i + 1).copied().unwrap_or(help.len());
        (help[starts[i]..end].lines())
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .filter_map(|l| l.split([' ', '<']).next())
            .collect()
    };
    assert_eq!(
        section("Sources").first(),
        Some(&"manifests"),
        "--manifests leads Sources:\n{help}"
    );
    for (name, flags) in [
        ("Sources", &["namespace", "cluster-labels"][..]),
        (
            "Kusto",
            &[
                "kusto-endpoint",
                "kusto-auth",
                "max-concurrent-queries",
                "query-memory-budget",
            ],
        ),
        (
            "Outputs",
            &[
                "remote-write-endpoint",
                "otlp-endpoint",
                "otlp-grpc-endpoint",
                "scrape-port",
                "otlp-auth",
                "tls-client-cert",
                "max-request-bytes",
            ],
        ),
        ("WAL", &["wal-dir", "wal-max-bytes", "wal-min-free-bytes"]),
        (
            "Kubernetes",
            &[
                "replicas",
                "pod-name",
                "status-patch-qps",
                "status-patch-burst",
                "event-qps",
                "event-burst",
            ],
        ),
        (
            "Telemetry",
            &["log-format", "metrics-port", "health-probe-port"],
        ),
    ] {
        let listed = section(name);
        for flag in flags {
            assert!(
                listed.contains(flag),
                "--{flag} is not under {name}:\n{help}"
            );
        }
    }
}

/// `run` with a standalone setup whose flags are replaced or extended by `extra` (later flags win).
fn run_standalone(wal: &std::path::Path, manifests: &str, extra: &[&str]) -> Output {
    let wal = wal.to_str().unwrap();
    let mut args = vec![
        "run",
        "--manifests",
        manifests,
        "--wal-dir",
        wal,
        "--otlp-endpoint",
        "http://127.0.0.1:1/v1/metrics",
        "--kusto-endpoint",
        "db=http://127.0.0.1:1",
        "--kusto-auth",
        "none",
        "--metrics-port",
        "127.0.0.1:0",
        "--health-probe-port",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    adxexporter(&args, &[])
}

fn entries(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// A missing `--manifests` directory is named, with the fix, before the WAL is created (it used to
/// end with "the scheduler task stopped unexpectedly", the cause a WARN line above it).
#[test]
fn a_missing_manifests_directory_is_named_before_the_wal_is_created() {
    let wal = tempfile::tempdir().unwrap();
    let out = run_standalone(wal.path(), "/nonexistent/manifests", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--manifests /nonexistent/manifests: not a directory"),
        "{err}"
    );
    assert!(!err.contains("stopped unexpectedly"), "{err}");
    assert!(
        entries(wal.path()).is_empty(),
        "the WAL dir should be untouched"
    );
}

/// A taken `--scrape-port` is named as such, not as the admin endpoints' ports.
#[test]
fn a_busy_scrape_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (wal, manifests) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = run_standalone(
        wal.path(),
        manifests.path().to_str().unwrap(),
        &["--scrape-port", &port],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on {port} for --scrape-port")),
        "{err}"
    );
    assert!(err.contains("change --scrape-port"), "{err}");
    assert!(!err.contains("--metrics-port"), "{err}");
    // The OS error appears once, not once per layer of the message.
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
}

/// An output URL without its scheme says to write the scheme ("relative URL without a base" did not).
#[test]
fn a_url_without_a_scheme_says_to_write_it() {
    let (wal, manifests) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = run_standalone(
        wal.path(),
        manifests.path().to_str().unwrap(),
        &["--remote-write-endpoint", "prometheus:9090/api/v1/write"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("write it with its scheme, e.g. http://prometheus:9090/api/v1/write"),
        "{err}"
    );
    let out = run_standalone(
        wal.path(),
        manifests.path().to_str().unwrap(),
        &["--kusto-endpoint", "db=127.0.0.1:8080"],
    );
    let err = stderr(&out);
    assert!(err.contains("--kusto-endpoint"), "{err}");
    assert!(err.contains("e.g. http://127.0.0.1:8080"), "{err}");
}
