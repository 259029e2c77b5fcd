//! Sources of MetricsExporter resources. Each publishes [`Snapshot`](crate::registry::Snapshot)s of the desired set on a
//! `watch` channel; the scheduler and the status writer read them and never learn where a resource
//! came from. Standalone mode reads a directory ([`manifests`]); Kubernetes mode ([`kube`]) watches
//! the API server and publishes the same snapshots.

pub mod kube;
pub mod manifests;
