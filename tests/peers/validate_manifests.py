#!/usr/bin/env python3
"""Offline validation of the Kubernetes deployment (run by tests/deploy_manifests.rs).

- Built-in kinds under deploy/kubernetes/ are validated strictly (unknown fields are errors) against the
  Kubernetes OpenAPI JSON schemas bundled in the `kubernetes-validate` package, for every version in
  K8S_VERSIONS. No API server is involved: admission, defaulting and CEL rules are not exercised.
- The CRD (deploy/crds/metricsexporters.yaml) is validated against the apiextensions.k8s.io/v1 schema
  (strictly too: it passes), and every MetricsExporter in deploy/examples/ and deploy/quickstart/ is
  validated against its openAPIV3Schema with `jsonschema`, with unknown fields rejected as
  `kubectl apply --validate=strict` would. `x-kubernetes-validations` (CEL) rules are NOT evaluated.
- The PodMonitor (monitoring.coreos.com, a third-party CRD) has no bundled schema: it is only checked to
  parse with the expected kind, apiVersion, selector and endpoint.
- Invariants: every kustomization lists every manifest in its directory (and only existing ones); the
  ClusterRole grants exactly the rules below, the Role exactly get/list/watch on the StatefulSet itself
  (by resourceNames) and is bound to the service account; the StatefulSet reads its replica count
  from itself (no --replicas, or one equal to .spec.replicas), the pod name and namespace come from
  the downward API, probes, ports, scrape annotations, security context, grace period and
  WAL volume size are as documented in docs/deploy.md.

Usage: validate_manifests.py [REPO_ROOT]   (exit 1 and one line per problem when anything is wrong)
"""
import re
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSIONS = ["1.30.0", "1.37.0"]

# (apiGroup, resource, verb): everything adxexporter needs, and nothing more.
ALLOWED_RULES = {
    ("adx-mon.azure.com", "metricsexporters", "get"),
    ("adx-mon.azure.com", "metricsexporters", "list"),
    ("adx-mon.azure.com", "metricsexporters", "watch"),
    ("adx-mon.azure.com", "metricsexporters/status", "get"),
    ("adx-mon.azure.com", "metricsexporters/status", "patch"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
}
# The Role: the replica count from the StatefulSet, by name only.
ROLE_RULES = {("apps", "statefulsets", "get"), ("apps", "statefulsets", "list"), ("apps", "statefulsets", "watch")}
THIRD_PARTY = {("monitoring.coreos.com/v1", "PodMonitor")}
SCRAPE_ANNOTATIONS = {"adx-mon/scrape": "true", "adx-mon/port": "8080", "adx-mon/path": "/metrics"}
COMPACTION_SLACK = 1.25
SIZE_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
              "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
              "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


class Report:
    def __init__(self):
        self.errors = []
        self.checked = 0

    def ok(self, what):
        self.checked += 1
        print(f"ok    {what}")

    def fail(self, what, why):
        self.checked += 1
        self.errors.append(f"{what}: {why}")
        print(f"FAIL  {what}: {why}")

    def expect(self, cond, what, why):
        if cond:
            self.ok(what)
        else:
            self.fail(what, why)


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def name_of(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def parse_size(text):
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2) not in SIZE_UNITS:
        raise ValueError(f"not a size: {text!r}")
    return float(m.group(1)) * SIZE_UNITS[m.group(2)]


def parse_duration_seconds(text):
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


# --- kustomizations ---------------------------------------------------------------------------

def check_kustomization(report, root, kfile):
    rel = kfile.relative_to(root)
    docs = load_docs(kfile)
    if len(docs) != 1 or docs[0].get("kind") != "Kustomization":
        report.fail(str(rel), "expected one Kustomization document")
        return
    resources = docs[0].get("resources") or []
    here = kfile.parent
    for entry in resources:
        target = (here / entry).resolve()
        if target.is_dir():
            found = target / "kustomization.yaml"
            report.expect(found.exists(), f"{rel} -> {entry}", "directory has no kustomization.yaml")
        else:
            report.expect(target.is_file(), f"{rel} -> {entry}", "listed file does not exist")
    listed = {(here / e).resolve() for e in resources}
    for manifest in sorted(here.glob("*.y*ml")):
        if manifest.name == kfile.name:
            continue
        report.expect(manifest.resolve() in listed, f"{rel} lists {manifest.name}",
                      f"{manifest.name} is in {here.relative_to(root)}/ but not in the kustomization's resources")


# --- built-in kinds ---------------------------------------------------------------------------

def validate_builtin(report, what, doc, strict):
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=strict)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.absolute_path) or "(root)"
            report.fail(f"{what} (k8s {version})", f"{path}: {e.message}")
            return
        except kubernetes_validate.SchemaNotFoundError as e:
            report.fail(f"{what} (k8s {version})", e.message)
            return
    report.ok(f"{what} valid for k8s {', '.join(K8S_VERSIONS)}{' (strict)' if strict else ''}")


def check_podmonitor(report, what, doc):
    spec = doc.get("spec") or {}
    labels = ((spec.get("selector") or {}).get("matchLabels") or {})
    endpoints = spec.get("podMetricsEndpoints") or []
    report.expect(labels.get("app.kubernetes.io/name") == "adxexporter", f"{what} selector",
                  "spec.selector.matchLabels must select app.kubernetes.io/name: adxexporter")
    report.expect(any(e.get("port") == "metrics" and e.get("path", "/metrics") == "/metrics" for e in endpoints),
                  f"{what} endpoint", "spec.podMetricsEndpoints needs {port: metrics, path: /metrics}")
    print(f"note  {what}: third-party CRD, no bundled schema: only kind, apiVersion, selector and endpoint checked")


def check_clusterrole(report, what, doc):
    granted = set()
    for rule in doc.get("rules") or []:
        if rule.get("nonResourceURLs") or rule.get("resourceNames"):
            report.fail(what, f"unexpected nonResourceURLs/resourceNames in {rule}")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    granted.add((group, resource, verb))
    extra = sorted(granted - ALLOWED_RULES)
    missing = sorted(ALLOWED_RULES - granted)
    report.expect(not extra, f"{what} grants nothing beyond least privilege",
                  f"grants more than adxexporter needs: {extra}")
    report.expect(not missing, f"{what} grants what adxexporter needs", f"missing: {missing}")


def check_role(report, what, doc, statefulsets):
    granted, names = set(), set()
    for rule in doc.get("rules") or []:
        if rule.get("nonResourceURLs"):
            report.fail(what, f"unexpected nonResourceURLs in {rule}")
        if not rule.get("resourceNames"):
            report.fail(what, f"rule without resourceNames grants every object of its kind: {rule}")
        names.update(rule.get("resourceNames") or [])
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    granted.add((group, resource, verb))
    extra = sorted(granted - ROLE_RULES)
    missing = sorted(ROLE_RULES - granted)
    report.expect(not extra, f"{what} grants nothing beyond least privilege",
                  f"grants more than adxexporter needs: {extra}")
    report.expect(not missing, f"{what} grants what adxexporter needs", f"missing: {missing}")
    ns = (doc.get("metadata") or {}).get("namespace")
    wanted = {n for (sns, n) in statefulsets if sns == ns}
    report.expect(names and names == wanted, f"{what} names the StatefulSet",
                  f"resourceNames {sorted(names)} must be exactly the StatefulSet(s) in {ns}: {sorted(wanted)}")


def check_rolebinding(report, what, doc, roles):
    ref = doc.get("roleRef") or {}
    ns = (doc.get("metadata") or {}).get("namespace")
    subjects = doc.get("subjects") or []
    report.expect(ref.get("kind") == "Role" and (ns, ref.get("name")) in roles, f"{what} binds the Role",
                  f"roleRef {ref} is not a Role of this directory in {ns}")
    report.expect(any(s.get("kind") == "ServiceAccount" and s.get("name") == "adxexporter" for s in subjects),
                  f"{what} binds the service account", "subjects must include ServiceAccount adxexporter")


def container_args(container):
    args = {}
    for arg in container.get("args") or []:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            args[key] = value
    return args


def check_statefulset(report, what, doc):
    spec = doc.get("spec") or {}
    pod = (spec.get("template") or {})
    pod_meta, pod_spec = pod.get("metadata") or {}, pod.get("spec") or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        report.fail(what, "no containers")
        return
    c = containers[0]
    args = container_args(c)
    replicas = spec.get("replicas")
    report.expect("replicas" not in args or args.get("replicas") == str(replicas),
                  f"{what} --replicas absent or == .spec.replicas",
                  f"--replicas={args.get('replicas')} but .spec.replicas={replicas}: they must agree "
                  "(better: drop --replicas, the pods read .spec.replicas)")
    report.expect((c.get("args") or [None])[0] == "run", f"{what} runs `run`", "first arg must be `run`")
    report.expect("manifests" not in args, f"{what} Kubernetes mode", "--manifests selects standalone mode")
    report.expect("kusto-endpoint" in args, f"{what} --kusto-endpoint", "missing --kusto-endpoint")
    report.expect("remote-write-endpoint" in args or "otlp-endpoint" in args, f"{what} output",
                  "needs --remote-write-endpoint and/or --otlp-endpoint")
    env = {e.get("name"): e for e in c.get("env") or []}
    pod_name = ((env.get("ADXEXPORTER_POD_NAME") or {}).get("valueFrom") or {}).get("fieldRef") or {}
    report.expect(pod_name.get("fieldPath") == "metadata.name", f"{what} ADXEXPORTER_POD_NAME",
                  "ADXEXPORTER_POD_NAME must come from the downward API fieldRef metadata.name")
    pod_ns = ((env.get("POD_NAMESPACE") or {}).get("valueFrom") or {}).get("fieldRef") or {}
    report.expect("replicas" in args or pod_ns.get("fieldPath") == "metadata.namespace",
                  f"{what} POD_NAMESPACE",
                  "POD_NAMESPACE must come from the downward API fieldRef metadata.namespace "
                  "(the StatefulSet whose .spec.replicas is the replica count lives there)")
    report.expect("statefulset" not in args or args["statefulset"] == (doc.get("metadata") or {}).get("name"),
                  f"{what} --statefulset", "--statefulset must name this StatefulSet")
    report.expect(spec.get("podManagementPolicy") == "Parallel", f"{what} podManagementPolicy",
                  "must be Parallel")
    annotations = pod_meta.get("annotations") or {}
    report.expect(all(annotations.get(k) == v for k, v in SCRAPE_ANNOTATIONS.items()), f"{what} scrape annotations",
                  f"pod template needs {SCRAPE_ANNOTATIONS}")
    report.expect((pod_meta.get("labels") or {}).get("azure.workload.identity/use") == "true",
                  f"{what} workload identity label", 'pod label azure.workload.identity/use: "true" is missing')
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    report.expect(ports == {"metrics": 8080, "health": 8081}, f"{what} ports", f"got {ports}")
    live = ((c.get("livenessProbe") or {}).get("httpGet") or {})
    ready = ((c.get("readinessProbe") or {}).get("httpGet") or {})
    report.expect(live.get("path") == "/healthz" and live.get("port") in ("health", 8081), f"{what} liveness",
                  f"liveness must GET /healthz on 8081, got {live}")
    report.expect(ready.get("path") == "/readyz" and ready.get("port") in ("health", 8081), f"{what} readiness",
                  f"readiness must GET /readyz on 8081, got {ready}")
    psc, csc = pod_spec.get("securityContext") or {}, c.get("securityContext") or {}
    report.expect(psc.get("runAsNonRoot") is True and psc.get("fsGroup") is not None
                  and (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                  f"{what} pod securityContext", "needs runAsNonRoot, fsGroup, seccompProfile RuntimeDefault")
    report.expect(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
                  and (csc.get("capabilities") or {}).get("drop") == ["ALL"],
                  f"{what} container securityContext",
                  "needs readOnlyRootFilesystem, allowPrivilegeEscalation: false, drop ALL")
    res = c.get("resources") or {}
    report.expect(res.get("requests") and res.get("limits"), f"{what} resources", "needs requests and limits")
    try:
        grace = parse_duration_seconds(args.get("shutdown-grace", "20s"))
        period = pod_spec.get("terminationGracePeriodSeconds", 30)
        report.expect(isinstance(period, int) and period > grace, f"{what} terminationGracePeriodSeconds",
                      f"{period} must exceed --shutdown-grace ({grace:g}s)")
    except ValueError as e:
        report.fail(f"{what} --shutdown-grace", str(e))
    wal_dir = args.get("wal-dir", "/var/lib/adxexporter")
    mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
    claims = {t.get("metadata", {}).get("name"): t for t in spec.get("volumeClaimTemplates") or []}
    wal_claim = claims.get(mounts.get(wal_dir))
    if wal_claim is None:
        report.fail(f"{what} WAL volume", f"{wal_dir} is not mounted from a volumeClaimTemplate")
        return
    try:
        storage = parse_size(wal_claim["spec"]["resources"]["requests"]["storage"])
        wal_max = parse_size(args.get("wal-max-bytes", "1GiB"))
        report.expect(storage >= wal_max * COMPACTION_SLACK, f"{what} WAL PVC size",
                      f"PVC {storage:.0f} B < --wal-max-bytes {wal_max:.0f} B x {COMPACTION_SLACK}")
    except (KeyError, TypeError, ValueError) as e:
        report.fail(f"{what} WAL PVC size", f"cannot read sizes: {e}")


def check_kubernetes_dir(report, root):
    base = root / "deploy" / "kubernetes"
    manifests = sorted(p for p in base.rglob("*.y*ml") if not p.name.startswith("kustomization."))
    if not manifests:
        report.fail(str(base), "no manifests")
    for kfile in sorted(base.rglob("kustomization.yaml")):
        check_kustomization(report, root, kfile)
    loaded = []
    for path in manifests:
        try:
            loaded.append((path, load_docs(path)))
        except yaml.YAMLError as e:
            report.fail(str(path.relative_to(root)), f"not YAML: {e}")
    every = [doc for _, docs in loaded for doc in docs]
    meta = lambda d: ((d.get("metadata") or {}).get("namespace"), (d.get("metadata") or {}).get("name"))
    statefulsets = {meta(d) for d in every if d.get("kind") == "StatefulSet"}
    roles = {meta(d) for d in every if d.get("kind") == "Role"}
    report.expect(roles, f"{base.relative_to(root)} Role", "no Role granting the StatefulSet's replica count")
    for path, docs in loaded:
        for doc in docs:
            what = f"{path.relative_to(root)} {name_of(doc)}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in THIRD_PARTY:
                check_podmonitor(report, what, doc)
                continue
            validate_builtin(report, what, doc, strict=True)
            if doc.get("kind") == "ClusterRole":
                check_clusterrole(report, what, doc)
            if doc.get("kind") == "StatefulSet":
                check_statefulset(report, what, doc)
            if doc.get("kind") == "Role":
                check_role(report, what, doc, statefulsets)
            if doc.get("kind") == "RoleBinding":
                check_rolebinding(report, what, doc, roles)


# --- the CRD and the MetricsExporters ---------------------------------------------------------

def strict_openapi(schema):
    """The CRD schema as JSON Schema: nullable honoured, unknown fields rejected unless preserved."""
    if isinstance(schema, list):
        return [strict_openapi(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_openapi(v) for k, v in schema.items()}
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def check_crd_and_resources(report, root):
    crd_path = root / "deploy" / "crds" / "metricsexporters.yaml"
    docs = load_docs(crd_path)
    if len(docs) != 1:
        report.fail(str(crd_path.relative_to(root)), "expected one CRD document")
        return
    crd = docs[0]
    validate_builtin(report, f"{crd_path.relative_to(root)} {name_of(crd)}", crd, strict=True)
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    served = {f"{group}/{v['name']}": v for v in crd["spec"]["versions"] if v.get("served")}
    count = 0
    for folder in ("examples", "quickstart"):
        for path in sorted((root / "deploy" / folder).glob("*.y*ml")):
            for doc in load_docs(path):
                if doc.get("kind") != kind:
                    continue
                count += 1
                what = f"{path.relative_to(root)} {name_of(doc)}"
                version = served.get(doc.get("apiVersion"))
                if version is None:
                    report.fail(what, f"apiVersion {doc.get('apiVersion')} is not served by the CRD ({list(served)})")
                    continue
                schema = strict_openapi(version["schema"]["openAPIV3Schema"])
                schema.setdefault("properties", {}).update(
                    {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
                errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
                if errors:
                    for e in errors:
                        path_text = "/".join(str(p) for p in e.absolute_path) or "(root)"
                        report.fail(what, f"{path_text}: {e.message}")
                else:
                    report.ok(f"{what} valid against the CRD schema (CEL rules not evaluated)")
    report.expect(count > 0, "MetricsExporter examples found", "no MetricsExporter in deploy/examples or deploy/quickstart")


def main(argv):
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[2]).resolve()
    report = Report()
    print(f"kubernetes-validate {metadata.version('kubernetes-validate')}, jsonschema "
          f"{metadata.version('jsonschema')}, Kubernetes schemas {', '.join(K8S_VERSIONS)}")
    check_kubernetes_dir(report, root)
    check_crd_and_resources(report, root)
    print(f"{report.checked - len(report.errors)} passed, {len(report.errors)} failed")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
