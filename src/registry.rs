//! The desired set of exporters on this instance: what a source (the `--manifests` directory, or the
//! Kubernetes watch) says should run, already validated and filtered by criteria. Pure: a source
//! builds a new [`Desired`] snapshot and publishes it on a `watch` channel; the scheduler compares
//! snapshots with [`diff`]. Nothing downstream knows where a resource came from.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crd::{BackfillStatus, MetricsExporter, ValidatedSpec};
use crate::criteria::{self, Placement, expression};
use crate::time::Ticks;
use crate::transform::Mapping;
use crate::wal::ExporterRef;

/// One exporter this instance runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Exporter {
    pub id: ExporterRef,
    pub generation: i64,
    pub spec: ValidatedSpec,
    pub mapping: Mapping,
    /// Where to resume when the WAL has no watermark: the resource's status watermark, else
    /// adx-mon's `LastSuccessfulExecution` condition (migration without gap or repeat).
    pub status_watermark: Option<Ticks>,
    /// The backfill's progress as the resource's status last recorded it (another replica's, after
    /// a rescale handover), to continue from its cursor.
    pub status_backfill: Option<BackfillStatus>,
}

/// The exporters keyed by uid.
pub(crate) type Desired = BTreeMap<String, Arc<Exporter>>;

/// Why a resource does not run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Its criteria do not match this instance's cluster labels (not an error: status untouched).
    Skipped(String),
    /// Another StatefulSet replica runs it (sharding, [`crate::shard`]; not an error: status untouched).
    NotOwned { owner: u32, replicas: u32 },
    /// Its spec is invalid: one line per problem, each naming the field and the fix.
    Invalid(Vec<String>),
    /// Its `criteriaExpression` cannot be evaluated with this instance's cluster labels (unknown
    /// label, not a bool, runtime error): not run, since it may have been meant to exclude this
    /// instance, and reported: log, gauge, and in standalone mode `status.json` (`Criteria=False`,
    /// reason `CriteriaExpressionError`; never a cluster status, docs/design.md#criteria-expression). The message names the
    /// field and the fix.
    CriteriaError(String),
    /// Standalone mode: a path of the `--manifests` directory with a manifest's name (`*.yaml`,
    /// `*.yml`, `*.json`) that is not read: a dangling symlink, a symlink loop, a directory, a
    /// special file. Keyed by the path; the message says why and what to do. Logged as a warning,
    /// counted as `invalid`, and in `status.json` as `Ready=False`, reason `FileSkipped`.
    FileSkipped(String),
}

/// The desired exporters plus the resources that were read but do not run here, and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub desired: Desired,
    /// Keyed by `namespace/name` (or file name for unreadable files).
    pub rejected: BTreeMap<String, Rejected>,
}

impl Exporter {
    /// Validates `resource` and checks its criteria and criteriaExpression against `cluster_labels`
    /// (the expression is compiled once, by validation). `cli_prefix` is
    /// `--metric-name-prefix`. Resources without a uid (files) get `namespace/name` as their uid.
    pub(crate) fn from_resource(
        resource: &MetricsExporter,
        cluster_labels: &BTreeMap<String, String>,
        cli_prefix: &str,
    ) -> Result<Exporter, Rejected> {
        let spec = resource.spec.validate().map_err(|problems| {
            Rejected::Invalid(problems.iter().map(ToString::to_string).collect())
        })?;
        match criteria::place(
            &spec.criteria,
            spec.criteria_expression.as_ref(),
            cluster_labels,
        ) {
            Placement::Runs => {}
            Placement::Skipped(reason) => return Err(Rejected::Skipped(reason)),
            Placement::Error(e) => {
                return Err(Rejected::CriteriaError(format!(
                    "{}: {e}",
                    expression::FIELD
                )));
            }
        }
        let mapping = Mapping::new(&spec.transform, cli_prefix);
        let namespace = resource
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = resource.metadata.name.clone().unwrap_or_default();
        let uid = resource
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| format!("{namespace}/{name}"));
        Ok(Exporter {
            id: ExporterRef::new(uid, namespace, name),
            generation: resource.metadata.generation.unwrap_or(0),
            spec,
            mapping,
            status_watermark: resource.resume_watermark(),
            status_backfill: (resource.status.as_ref()).and_then(|s| s.backfill.clone()),
        })
    }

    /// `namespace/name`, for logs.
    pub fn key(&self) -> String {
        format!("{}/{}", self.id.namespace, self.id.name)
    }
}

/// What changed between two snapshots.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Changes {
    /// New exporters, and exporters whose spec or generation changed (their task restarts and
    /// continues from the watermark: a spec change never re-exports).
    pub start: Vec<Arc<Exporter>>,
    /// Uids no longer desired: stop querying; what they already appended is still delivered.
    pub stop: Vec<String>,
}

/// The changes that turn `old` into `new`.
pub(crate) fn diff(old: &Desired, new: &Desired) -> Changes {
    let mut changes = Changes::default();
    for (uid, exporter) in new {
        match old.get(uid) {
            Some(prev) if prev.generation == exporter.generation && prev.spec == exporter.spec => {}
            _ => changes.start.push(exporter.clone()),
        }
    }
    for uid in old.keys() {
        if !new.contains_key(uid) {
            changes.stop.push(uid.clone());
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, interval: &str, criteria: &str) -> MetricsExporter {
        let yaml = [
            "apiVersion: adx-mon.azure.com/v1",
            "kind: MetricsExporter",
            &format!("metadata: {{name: {name}, namespace: ns}}"),
            "spec:",
            "  database: db",
            &format!("  interval: {interval}"),
            "  body: T",
            &format!("  criteria: {criteria}"),
            "  transform: {valueColumns: [v], timestampColumn: ts, defaultMetricName: m}",
        ]
        .join("\n");
        let docs = crate::crd::load_documents(&yaml).expect("parses");
        docs.into_iter()
            .next()
            .expect("one")
            .expect("valid")
            .resource
    }

    fn desired(list: &[MetricsExporter]) -> Desired {
        let labels = BTreeMap::from([("region".to_owned(), "eastus".to_owned())]);
        list.iter()
            .map(|r| {
                let e = Exporter::from_resource(r, &labels, "").expect("accepted");
                (e.id.uid.clone(), Arc::new(e))
            })
            .collect()
    }

    #[test]
    fn uid_defaults_to_namespace_and_name() {
        let d = desired(&[resource("a", "1m", "{}")]);
        assert!(d.contains_key("ns/a"));
    }

    #[test]
    fn criteria_mismatch_is_a_skip_not_an_error() {
        let labels = BTreeMap::from([("region".to_owned(), "eastus".to_owned())]);
        let r = resource("a", "1m", "{region: [westus]}");
        match Exporter::from_resource(&r, &labels, "") {
            Err(Rejected::Skipped(reason)) => assert!(reason.contains("westus"), "{reason}"),
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    fn with_expression(expression: &str) -> MetricsExporter {
        let mut r = resource("a", "1m", "{region: [eastus]}");
        r.spec.criteria_expression = Some(expression.to_owned());
        r
    }

    #[test]
    fn criteria_expression_runs_skips_or_reports() {
        let labels = BTreeMap::from([
            ("region".to_owned(), "eastus".to_owned()),
            ("env".to_owned(), "prod".to_owned()),
        ]);
        let from = |e: &str| Exporter::from_resource(&with_expression(e), &labels, "");
        assert!(from("env == 'prod'").is_ok());
        assert!(from("   ").is_ok(), "a blank expression is no constraint");
        match from("env == 'dev'") {
            Err(Rejected::Skipped(reason)) => assert!(reason.contains("env == 'dev'"), "{reason}"),
            other => panic!("expected a skip, got {other:?}"),
        }
        match from("zone == '1'") {
            Err(Rejected::CriteriaError(message)) => assert!(
                message.starts_with("spec.criteriaExpression: refers to zone"),
                "{message}"
            ),
            other => panic!("expected a criteria error, got {other:?}"),
        }
        match from("env ==") {
            Err(Rejected::Invalid(lines)) => assert!(
                lines[0].starts_with("spec.criteriaExpression: \"env ==\" is not valid CEL"),
                "{lines:?}"
            ),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn invalid_spec_names_the_field() {
        let labels = BTreeMap::new();
        let r = resource("a", "0s", "{}");
        match Exporter::from_resource(&r, &labels, "") {
            Err(Rejected::Invalid(lines)) => {
                assert!(
                    lines.iter().any(|l| l.starts_with("spec.interval")),
                    "{lines:?}"
                )
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn diff_starts_new_and_changed_and_stops_removed() {
        let old = desired(&[resource("a", "1m", "{}"), resource("b", "1m", "{}")]);
        let new = desired(&[
            resource("a", "1m", "{}"),
            resource("b", "5m", "{}"),
            resource("c", "1m", "{}"),
        ]);
        let changes = diff(&old, &new);
        let started: Vec<_> = changes.start.iter().map(|e| e.id.uid.as_str()).collect();
        assert_eq!(started, ["ns/b", "ns/c"]);
        assert!(changes.stop.is_empty());
        let changes = diff(&new, &desired(&[resource("c", "1m", "{}")]));
        assert_eq!(changes.stop, ["ns/a", "ns/b"]);
        assert!(changes.start.is_empty());
    }
}
