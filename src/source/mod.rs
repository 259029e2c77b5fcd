//! Sources of MetricsExporter resources. Each publishes [`Snapshot`]s of the desired set on a
//! `watch` channel; the scheduler and the status writer read them and never learn where a resource
//! came from. Standalone mode reads a directory ([`manifests`]); Kubernetes mode ([`kube`]) watches
//! the API server and publishes the same snapshots.

use std::collections::BTreeMap;

use crate::registry::{Desired, Rejected};

pub mod kube;
pub mod manifests;

/// The desired exporters plus the resources that were read but do not run here, and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub desired: Desired,
    /// Keyed by `namespace/name` (or file name for unreadable files).
    pub rejected: BTreeMap<String, Rejected>,
}
