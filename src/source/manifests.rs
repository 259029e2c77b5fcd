//! Standalone mode: MetricsExporter resources from `*.yaml`, `*.yml` and `*.json` files in the
//! `--manifests` directory (not recursive), re-read when a file's size or modification time changes.
//!
//! A file that cannot be read or parsed is reported and its previous good resources keep running
//! (a typo while editing must not stop an exporter at 3 a.m.); a resource that fails validation is
//! reported with one line per problem and does not run; every other resource keeps running. The
//! same `namespace/name` in two files: the first file (by name) wins and the other is reported.
//! A spec field this version does not know is logged as a warning (naming the file, the field and
//! the known field it most likely meant) whenever its file is read: it is ignored, so the field
//! meant keeps its default.
//!
//! A path with a manifest's name that is not a readable regular file (a dangling symlink, a symlink
//! loop, a directory named `x.yaml`, a FIFO) is not read, and reported like an invalid resource:
//! a `warn` line naming the path and why, [`Rejected::FileSkipped`] in the snapshot (so
//! `status.json` and the exporters gauge show it), once per change. [`manifest_files`] is the one
//! listing of the directory; `adxexporter check DIR` uses it too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::crd::load_documents;

use crate::registry::{Exporter, Rejected, Snapshot};
use crate::telemetry::Health;

/// How often the directory is checked for changes.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error(
        "cannot read the --manifests directory {dir}: {source} (check the path and permissions)"
    )]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// One resource of a file: an exporter to run, or its key and why it does not run.
type Entry = Result<Exporter, (String, Rejected)>;

/// What one file yielded the last time it was read successfully.
#[derive(Debug, Clone)]
struct FileState {
    stamp: (u64, Option<SystemTime>),
    exporters: Vec<Entry>,
}

/// Reads the directory into snapshots, remembering each file's last good content.
pub(crate) struct ManifestSource {
    dir: PathBuf,
    cluster_labels: BTreeMap<String, String>,
    cli_prefix: String,
    files: BTreeMap<PathBuf, FileState>,
    /// Files that failed to load this round, with the error (reported once per change).
    file_errors: BTreeMap<PathBuf, String>,
    /// Paths with a manifest's name that are not read, and why ([`ManifestDir::skipped`]).
    skipped: BTreeMap<PathBuf, String>,
}

impl ManifestSource {
    pub fn new(dir: PathBuf, cluster_labels: BTreeMap<String, String>, cli_prefix: String) -> Self {
        ManifestSource {
            dir,
            cluster_labels,
            cli_prefix,
            files: BTreeMap::new(),
            file_errors: BTreeMap::new(),
            skipped: BTreeMap::new(),
        }
    }

    /// Re-reads changed files and returns the current snapshot.
    pub fn load(&mut self) -> Result<Snapshot, ManifestError> {
        self.refresh()?;
        Ok(self.snapshot())
    }

    /// Re-reads changed files; `true` when a file was added, changed or removed since the last call
    /// (only then can the snapshot differ). Cheap when nothing changed: one `stat` per file, so a
    /// directory of thousands of manifests can be polled every [`POLL_INTERVAL`].
    fn refresh(&mut self) -> Result<bool, ManifestError> {
        // Sorted by `manifest_files`, so membership is a binary search: a linear `contains` here was
        // quadratic (1000 files = 1M path comparisons, ~5 % of a core at the 2 s poll).
        let ManifestDir {
            files: paths,
            skipped,
        } = manifest_files(&self.dir)?;
        let before = (self.files.len(), self.file_errors.len());
        self.files.retain(|p, _| paths.binary_search(p).is_ok());
        self.file_errors
            .retain(|p, _| paths.binary_search(p).is_ok());
        let skipped: BTreeMap<PathBuf, String> = skipped.into_iter().collect();
        let mut changed =
            (self.files.len(), self.file_errors.len()) != before || skipped != self.skipped;
        self.skipped = skipped;
        for path in &paths {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let stamp = (meta.len(), meta.modified().ok());
            if self.files.get(path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            match self.read_file(path) {
                Ok(exporters) => {
                    self.file_errors.remove(path);
                    self.files
                        .insert(path.clone(), FileState { stamp, exporters });
                    changed = true;
                }
                Err(message) => {
                    // Reported through the snapshot (log, status, gauge), not here.
                    changed |= self.file_errors.get(path) != Some(&message);
                    self.file_errors.insert(path.clone(), message);
                }
            }
        }
        Ok(changed)
    }

    fn read_file(&self, path: &Path) -> Result<Vec<Entry>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let docs = load_documents(&text).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for doc in docs {
            match doc {
                Ok(loaded) => {
                    let key = loaded.resource.key();
                    for field in &loaded.unknown_fields {
                        tracing::warn!(file = %path.display(), exporter = %key, "{field}");
                    }
                    out.push(
                        Exporter::from_resource(
                            &loaded.resource,
                            &self.cluster_labels,
                            &self.cli_prefix,
                        )
                        .map_err(|r| (key, r)),
                    );
                }
                Err(e) => out.push(Err((
                    path.display().to_string(),
                    Rejected::Invalid(e.lines()),
                ))),
            }
        }
        Ok(out)
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for (path, why) in &self.skipped {
            (snap.rejected).insert(
                path.display().to_string(),
                Rejected::FileSkipped(why.clone()),
            );
        }
        let mut origin: BTreeMap<String, &Path> = BTreeMap::new();
        for (path, state) in &self.files {
            for entry in &state.exporters {
                match entry {
                    Ok(exporter) => {
                        let key = exporter.key();
                        if let Some(first) = origin.get(&key) {
                            snap.rejected.insert(
                                format!("{key} ({})", path.display()),
                                Rejected::Invalid(vec![format!(
                                    "{key} is also defined in {}: rename one of them",
                                    first.display()
                                )]),
                            );
                            continue;
                        }
                        origin.insert(key, path);
                        snap.desired
                            .insert(exporter.id.uid.clone(), Arc::new(exporter.clone()));
                    }
                    Err((key, why)) => {
                        snap.rejected.insert(key.clone(), why.clone());
                    }
                }
            }
        }
        // A file that cannot be read or parsed is an invalid "resource" of its own, so it reaches
        // the log, status.json and the exporters{state="invalid"} gauge (and its alert).
        for (path, message) in &self.file_errors {
            let keeps = if self.files.contains_key(path) {
                "the resources it held before keep running"
            } else {
                "none of its resources runs"
            };
            snap.rejected.insert(
                path.display().to_string(),
                Rejected::Invalid(vec![format!(
                    "{}: {message}: fix the file ({keeps})",
                    path.display()
                )]),
            );
        }
        snap
    }

    /// Publishes a snapshot now and whenever the directory changes, until `shutdown`.
    pub async fn run(
        mut self,
        tx: watch::Sender<Arc<Snapshot>>,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> Result<(), ManifestError> {
        let mut last = self.load()?;
        super::report(&last, &Snapshot::default());
        tx.send_replace(Arc::new(last.clone()));
        health.set_resources_synced();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            let snap = match self.refresh() {
                Ok(false) => continue,
                Ok(true) => self.snapshot(),
                Err(e) => {
                    // The directory vanished or became unreadable: keep what runs, say so.
                    tracing::error!("{e}; keeping the resources loaded before");
                    continue;
                }
            };
            if snap != last {
                super::report(&snap, &last);
                tx.send_replace(Arc::new(snap.clone()));
                last = snap;
            }
        }
    }
}

/// What a `--manifests` directory holds (see [`manifest_files`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ManifestDir {
    /// The regular files (symlinks followed) named `*.yaml`, `*.yml` or `*.json`, sorted.
    pub files: Vec<PathBuf>,
    /// The other paths with such a name, sorted, each with why it is not read and what to do.
    pub skipped: Vec<(PathBuf, String)>,
}

/// The manifests directly in `dir` (not recursive): what `run --manifests DIR` reads and
/// `adxexporter check DIR` checks, and the paths with a manifest's name it does not read.
pub(crate) fn manifest_files(dir: &Path) -> Result<ManifestDir, ManifestError> {
    let err = |source| ManifestError::Dir {
        dir: dir.to_owned(),
        source,
    };
    let mut out = ManifestDir::default();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if !is_manifest {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => out.files.push(path),
            Ok(meta) if meta.is_dir() => out.skipped.push((
                path,
                "a directory, not a file (--manifests reads only the files directly in it): move its files up or rename it".into(),
            )),
            Ok(_) => out.skipped.push((
                path,
                "not a regular file (a FIFO, socket or device): make it a file or rename it".into(),
            )),
            Err(e) => {
                let why = unreadable(&path, &e);
                out.skipped.push((path, why));
            }
        }
    }
    out.files.sort();
    out.skipped.sort();
    Ok(out)
}

/// Why a manifest path whose metadata cannot be read (following symlinks) is not read.
fn unreadable(path: &Path, e: &std::io::Error) -> String {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return format!("cannot be read: {e}");
    }
    let target = std::fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
    if rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::LOOP) {
        format!("a symlink loop (-> {target} never reaches a file): fix or remove the link")
    } else if e.kind() == std::io::ErrorKind::NotFound {
        format!("a dangling symlink (-> {target}, which does not exist): fix or remove the link")
    } else {
        format!("a symlink (-> {target}) that cannot be followed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: a, namespace: ns}\n\
        spec:\n  database: db\n  interval: 1m\n  body: T\n  transform: {valueColumns: [v], timestampColumn: ts, defaultMetricName: m}\n";

    #[test]
    fn a_broken_edit_keeps_the_last_good_resources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, GOOD).unwrap();
        let mut src = ManifestSource::new(dir.path().into(), BTreeMap::new(), String::new());
        let first = src.load().unwrap();
        assert_eq!(first.desired.len(), 1);
        std::fs::write(&file, "spec: [unclosed\n  - x: {").unwrap();
        let second = src.load().unwrap();
        assert_eq!(
            second.desired, first.desired,
            "the previous good version keeps running"
        );
        assert!(src.file_errors.contains_key(&file));
        let key = file.display().to_string();
        match second.rejected.get(&key) {
            Some(Rejected::Invalid(lines)) => assert!(
                lines[0].contains("fix the file (the resources it held before keep running)"),
                "{lines:?}"
            ),
            other => panic!("the broken file is reported as invalid: {other:?}"),
        }
        std::fs::write(&file, GOOD).unwrap();
        let third = src.load().unwrap();
        assert!(third.rejected.is_empty(), "fixed: {:?}", third.rejected);
    }

    /// A file that never parsed (a YAML syntax error, bytes that are not UTF-8) is an invalid entry
    /// of its own: status, the exporters gauge and its alert see it, not only a log line.
    #[test]
    fn a_file_that_never_parsed_is_reported_as_invalid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("syntax.yaml"), "spec:\n  interval: [1m\n").unwrap();
        std::fs::write(dir.path().join("bytes.yaml"), b"kind: \xff\xfe\n").unwrap();
        let mut src = ManifestSource::new(dir.path().into(), BTreeMap::new(), String::new());
        let snap = src.load().unwrap();
        assert!(snap.desired.is_empty());
        for name in ["syntax.yaml", "bytes.yaml"] {
            let key = dir.path().join(name).display().to_string();
            match snap.rejected.get(&key) {
                Some(Rejected::Invalid(lines)) => {
                    assert!(lines[0].contains("none of its resources runs"), "{lines:?}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_resources_are_reported_and_others_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            GOOD.replace("name: a", "name: b")
                .replace("interval: 1m", "interval: 0s"),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let snap = ManifestSource::new(dir.path().into(), BTreeMap::new(), String::new())
            .load()
            .unwrap();
        assert_eq!(snap.desired.keys().collect::<Vec<_>>(), ["ns/a"]);
        match snap.rejected.get("ns/b") {
            Some(Rejected::Invalid(lines)) => {
                assert!(lines[0].starts_with("spec.interval"), "{lines:?}")
            }
            other => panic!("expected ns/b invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_same_resource_in_two_files_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
        let snap = ManifestSource::new(dir.path().into(), BTreeMap::new(), String::new())
            .load()
            .unwrap();
        assert_eq!(snap.desired.len(), 1);
        assert_eq!(snap.rejected.len(), 1);
    }

    #[test]
    fn paths_with_a_manifest_name_that_are_not_read_are_reported_as_skipped_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        let dangling = dir.path().join("dangling.yaml");
        std::os::unix::fs::symlink("gone.yaml", &dangling).unwrap();
        let looped = dir.path().join("loop.yml");
        std::os::unix::fs::symlink("loop.yml", &looped).unwrap();
        let subdir = dir.path().join("old.json");
        std::fs::create_dir(&subdir).unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        let listing = manifest_files(dir.path()).unwrap();
        assert_eq!(listing.files, [dir.path().join("a.yaml")]);
        let skipped: Vec<&PathBuf> = listing.skipped.iter().map(|(p, _)| p).collect();
        assert_eq!(skipped, [&dangling, &looped, &subdir]);

        let mut src = ManifestSource::new(dir.path().into(), BTreeMap::new(), String::new());
        assert!(src.refresh().unwrap());
        let snap = src.snapshot();
        assert_eq!(snap.desired.keys().collect::<Vec<_>>(), ["ns/a"]);
        let why = |p: &Path| match snap.rejected.get(&p.display().to_string()) {
            Some(Rejected::FileSkipped(why)) => why.clone(),
            other => panic!("{} not reported: {other:?}", p.display()),
        };
        assert_eq!(
            why(&dangling),
            "a dangling symlink (-> gone.yaml, which does not exist): fix or remove the link"
        );
        assert_eq!(
            why(&looped),
            "a symlink loop (-> loop.yml never reaches a file): fix or remove the link"
        );
        assert!(why(&subdir).starts_with("a directory, not a file"));
        assert!(!src.refresh().unwrap(), "reported once, not every poll");
        std::fs::remove_file(&dangling).unwrap();
        assert!(src.refresh().unwrap(), "a fixed path is a change");
        assert_eq!(src.snapshot().rejected.len(), 2);
    }

    #[test]
    fn a_poll_reports_change_only_when_a_file_was_added_edited_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, GOOD).unwrap();
        let mut src = ManifestSource::new(dir.path().into(), BTreeMap::new(), String::new());
        assert!(src.refresh().unwrap(), "the first read is a change");
        assert!(!src.refresh().unwrap(), "nothing changed");
        let b = dir.path().join("b.yaml");
        std::fs::write(&b, GOOD.replace("name: a", "name: b")).unwrap();
        assert!(src.refresh().unwrap(), "a file was added");
        assert_eq!(src.snapshot().desired.len(), 2);
        std::fs::write(&b, "spec: [unclosed\n  - x: {").unwrap();
        let desired = src.snapshot().desired;
        assert!(
            src.refresh().unwrap(),
            "a broken edit is a change: the file is now reported"
        );
        assert_eq!(src.snapshot().desired, desired, "and keeps the old content");
        assert!(
            !src.refresh().unwrap(),
            "and is not a change on the next poll either"
        );
        std::fs::remove_file(&a).unwrap();
        assert!(src.refresh().unwrap(), "a file was removed");
        assert_eq!(src.snapshot().desired.keys().collect::<Vec<_>>(), ["ns/b"]);
        assert!(!src.refresh().unwrap());
    }
}
