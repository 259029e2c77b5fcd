//! The Kubernetes deployment, checked offline: `tests/peers/validate_manifests.py` validates
//! `deploy/kubernetes/` against the Kubernetes schemas bundled in `kubernetes-validate`, the examples
//! against the CRD's schema, and the RBAC/StatefulSet invariants; deliberately broken copies must fail.
//! The Dockerfile cannot be built here (no Docker engine), so its invariants are linted as text.
mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// The deployment folders the validator reads, copied so a test can break them.
const DEPLOY_DIRS: &[&str] = &["kubernetes", "crds", "examples", "quickstart"];

/// Runs the validator on a repository root; returns (succeeded, stdout + stderr).
fn validate(root: &Path) -> (bool, String) {
    let script = common::repo_root().join("tests/peers/validate_manifests.py");
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(common::venv_bin("python"))
        .arg(&script)
        .arg(root)
        .output()
        .expect("run validate_manifests.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A scratch repository holding a copy of `deploy/`'s manifests.
fn deploy_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in DEPLOY_DIRS {
        copy_dir(
            &common::repo_root().join("deploy").join(name),
            &dir.path().join("deploy").join(name),
        );
    }
    dir
}

/// Replaces exactly one occurrence of `from` in a copied file, so a stale pattern fails loudly.
fn edit(root: &Path, file: &str, from: &str, to: &str) {
    let path = root.join(file);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "{file} should contain {from:?} once"
    );
    fs::write(&path, text.replace(from, to)).unwrap();
}

/// Asserts the validator rejects the copy with a FAIL line naming `file` and containing `why`.
fn assert_rejected(root: &Path, file: &str, why: &str) {
    let (ok, output) = validate(root);
    assert!(!ok, "the broken {file} passed validation:\n{output}");
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains(file) && l.contains(why)),
        "no FAIL line for {file} mentioning {why:?}:\n{output}"
    );
}

#[test]
fn deploy_manifests_validate_offline() {
    let (ok, output) = validate(&common::repo_root());
    assert!(ok, "validate_manifests.py failed:\n{output}");
    assert!(output.contains(" 0 failed"), "{output}");
    for checked in [
        "StatefulSet/adxexporter valid for k8s",
        "ClusterRole/adxexporter grants nothing beyond least privilege",
        "Role/adxexporter grants nothing beyond least privilege",
        "Role/adxexporter names the StatefulSet",
        "RoleBinding/adxexporter binds the Role",
        "StatefulSet/adxexporter POD_NAMESPACE",
        "CustomResourceDefinition/metricsexporters.adx-mon.azure.com valid",
        "MetricsExporter/heartbeat-cpu valid against the CRD schema",
        "PodMonitor/adxexporter selector",
    ] {
        assert!(
            output.contains(checked),
            "{checked:?} not checked:\n{output}"
        );
    }
}

#[test]
fn a_string_where_the_statefulset_needs_an_int_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/kubernetes/statefulset.yaml",
        "  replicas: 2\n",
        "  replicas: \"2\"\n",
    );
    assert_rejected(
        copy.path(),
        "statefulset.yaml",
        "spec/replicas: '2' is not of type 'integer'",
    );
}

#[test]
fn an_unknown_statefulset_field_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/kubernetes/statefulset.yaml",
        "  podManagementPolicy: Parallel\n",
        "  podManagementPolicy: Parallel\n  podManagmentPolicy: Parallel\n",
    );
    assert_rejected(
        copy.path(),
        "statefulset.yaml",
        "'podManagmentPolicy' was unexpected",
    );
}

#[test]
fn replicas_flag_disagreeing_with_spec_replicas_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/kubernetes/statefulset.yaml",
        "            - --cluster-labels=region=eastus\n",
        "            - --cluster-labels=region=eastus\n            - --replicas=3\n",
    );
    assert_rejected(copy.path(), "statefulset.yaml", "they must agree");
}

#[test]
fn a_role_for_every_statefulset_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/kubernetes/role.yaml",
        "    resourceNames: [\"adxexporter\"]\n",
        "",
    );
    assert_rejected(
        copy.path(),
        "role.yaml",
        "rule without resourceNames grants every object",
    );
}

#[test]
fn a_role_that_can_scale_the_statefulset_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/kubernetes/role.yaml",
        "    verbs: [\"get\", \"list\", \"watch\"]\n",
        "    verbs: [\"get\", \"list\", \"watch\", \"patch\"]\n",
    );
    assert_rejected(
        copy.path(),
        "role.yaml",
        "grants more than adxexporter needs",
    );
}

#[test]
fn a_statefulset_without_its_namespace_from_the_downward_api_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/kubernetes/statefulset.yaml",
        "                  fieldPath: metadata.namespace\n",
        "                  fieldPath: metadata.name\n",
    );
    assert_rejected(
        copy.path(),
        "statefulset.yaml",
        "POD_NAMESPACE must come from the downward API",
    );
}

#[test]
fn an_example_with_an_invalid_interval_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/examples/customer-analytics.yaml",
        "  interval: 15m\n",
        "  interval: 5 minutes\n",
    );
    assert_rejected(
        copy.path(),
        "customer-analytics.yaml",
        "spec/interval: '5 minutes' does not match",
    );
}

#[test]
fn an_example_with_an_unknown_spec_field_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/quickstart/heartbeat.yaml",
        "  interval: 1m\n",
        "  interval: 1m\n  intervall: 1m\n",
    );
    assert_rejected(copy.path(), "heartbeat.yaml", "'intervall' was unexpected");
}

#[test]
fn a_clusterrole_granting_one_more_verb_is_rejected() {
    let copy = deploy_copy();
    edit(
        copy.path(),
        "deploy/kubernetes/clusterrole.yaml",
        "verbs: [\"get\", \"list\", \"watch\"]",
        "verbs: [\"get\", \"list\", \"watch\", \"delete\"]",
    );
    assert_rejected(
        copy.path(),
        "clusterrole.yaml",
        "('adx-mon.azure.com', 'metricsexporters', 'delete')",
    );
}

#[test]
fn a_manifest_missing_from_the_kustomization_is_rejected() {
    let copy = deploy_copy();
    fs::write(
        copy.path().join("deploy/kubernetes/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: adxexporter\n",
    )
    .unwrap();
    assert_rejected(
        copy.path(),
        "kustomization.yaml lists configmap.yaml",
        "not in the kustomization's resources",
    );
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let text = fs::read_to_string(common::repo_root().join("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

#[test]
fn dockerfile_is_multi_stage_locked_non_root_with_the_binary_as_entrypoint() {
    let instructions = dockerfile_instructions();
    let froms: Vec<_> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(
        froms[0].1.starts_with("FROM rust:1.95-bookworm AS "),
        "builder not pinned to rust:1.95-bookworm: {}",
        froms[0].1
    );
    let (final_start, final_from) = froms[froms.len() - 1];
    assert_eq!(final_from, "FROM gcr.io/distroless/cc-debian12:nonroot");
    let build = &instructions[..final_start];
    let runtime = &instructions[final_start..];
    assert!(
        build
            .iter()
            .any(|i| i.starts_with("RUN ") && i.contains("cargo build --release --locked")),
        "the builder must run `cargo build --release --locked`: {build:?}"
    );
    let user = runtime
        .iter()
        .rfind(|i| i.starts_with("USER "))
        .expect("the final stage sets USER");
    let uid = user["USER ".len()..].split(':').next().unwrap().trim();
    assert!(
        !matches!(uid, "root" | "0"),
        "final user must be non-root: {user}"
    );
    let entrypoint = runtime
        .iter()
        .rfind(|i| i.starts_with("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    assert_eq!(entrypoint, "ENTRYPOINT [\"/usr/local/bin/adxexporter\"]");
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("COPY --from=") && i.ends_with(" /usr/local/bin/adxexporter")),
        "the binary is not copied to the ENTRYPOINT path: {runtime:?}"
    );
    assert!(
        runtime.contains(&"CMD [\"run\"]".to_string()),
        "{runtime:?}"
    );
    assert!(
        runtime.contains(&"EXPOSE 8080 8081".to_string()),
        "{runtime:?}"
    );
    let ignore = fs::read_to_string(common::repo_root().join(".dockerignore")).unwrap();
    for entry in ["target/", ".venv"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore must exclude {entry}"
        );
    }
}

#[test]
fn every_flag_in_the_statefulset_is_one_adxexporter_run_accepts() {
    let help = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .args(["run", "--help"])
        .output()
        .expect("run adxexporter run --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let statefulset =
        fs::read_to_string(common::repo_root().join("deploy/kubernetes/statefulset.yaml")).unwrap();
    let flags: Vec<&str> = statefulset
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|arg| arg.split('=').next().unwrap_or(arg))
        .collect();
    assert!(
        flags.contains(&"kusto-endpoint"),
        "no flags found: {flags:?}"
    );
    for flag in flags {
        let flag = format!("--{flag}");
        let known = help.lines().any(|l| {
            l.trim_start()
                .split([' ', ',', '='])
                .any(|word| word == flag)
        });
        assert!(
            known,
            "statefulset.yaml passes {flag}, which `adxexporter run` does not accept:\n{help}"
        );
    }
}

/// Applies RFC 6902 `add`/`replace` operations (all the scrape overlay uses) to `doc`.
fn apply_json_patch(doc: &mut serde_json::Value, ops: &serde_json::Value) {
    for op in ops.as_array().expect("a JSON patch is a list") {
        let path = op["path"].as_str().expect("op.path");
        let (parent, last) = path.rsplit_once('/').expect("a pointer with a parent");
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("{parent} is not in the StatefulSet"));
        let value = op["value"].clone();
        match (op["op"].as_str(), target) {
            (Some("add"), serde_json::Value::Array(a)) if last == "-" => a.push(value),
            (Some("add" | "replace"), serde_json::Value::Object(m)) => {
                let old = m.insert(last.clone(), value);
                if op["op"] == "replace" {
                    assert!(old.is_some(), "replace of a missing {path}");
                }
            }
            (other, _) => panic!("unsupported op {other:?} at {path}"),
        }
    }
}

#[test]
fn the_scrape_overlay_turns_the_output_on_and_points_the_annotations_at_it() {
    let root = common::repo_root();
    let overlay: serde_json::Value = serde_saphyr::from_str(
        &fs::read_to_string(root.join("deploy/scrape-output/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(overlay["resources"][0], "../kubernetes");
    let patch = &overlay["patches"][0];
    assert_eq!(patch["target"]["kind"], "StatefulSet");
    let ops: serde_json::Value =
        serde_saphyr::from_str(patch["patch"].as_str().expect("an inline patch")).unwrap();
    let mut sts: serde_json::Value = serde_saphyr::from_str(
        &fs::read_to_string(root.join("deploy/kubernetes/statefulset.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(patch["target"]["name"], sts["metadata"]["name"]);
    let base_args = sts["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(
        !base_args.to_string().contains("--scrape-port"),
        "the base keeps the scrape output off"
    );
    apply_json_patch(&mut sts, &ops);

    let pod = &sts["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let port: u16 = (container["args"].as_array().unwrap().iter())
        .filter_map(|a| a.as_str()?.strip_prefix("--scrape-port="))
        .map(|p| p.parse().expect("a port number"))
        .next()
        .expect("the overlay passes --scrape-port");
    let ports: Vec<(&str, u64)> = (container["ports"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(ports.contains(&("scrape", u64::from(port))), "{ports:?}");
    assert!(
        ports.iter().filter(|(_, p)| *p == u64::from(port)).count() == 1,
        "the scrape page has its own port: {ports:?}"
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["adx-mon/scrape"], "true");
    assert_eq!(annotations["adx-mon/port"], port.to_string());
    // No --scrape-path in the overlay: the annotation must name the default path.
    assert!(!ops.to_string().contains("--scrape-path"));
    assert_eq!(annotations["adx-mon/path"], "/metrics");

    // And `adxexporter run` accepts the patched arguments.
    let args: Vec<String> = (container["args"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let help = Command::new(env!("CARGO_BIN_EXE_adxexporter"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in args.iter().filter_map(|a| a.strip_prefix("--")) {
        let flag = format!("--{}", arg.split('=').next().unwrap());
        assert!(
            help.contains(&format!("{flag} ")),
            "{flag} is not a run flag"
        );
    }
}
