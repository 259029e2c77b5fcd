//! Standalone mode's status: `<wal-dir>/status.json`, one entry per `namespace/name`, replaced
//! atomically (write a temporary file, fsync, rename) so a reader never sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;

/// How often the status file is refreshed.
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// The status file's name inside `--wal-dir`.
pub(crate) const STATUS_FILE_NAME: &str = "status.json";

/// Writes `<wal-dir>/status.json` every [`STATUS_INTERVAL`] and once more at shutdown, from the
/// source's first snapshot on (a stop before that leaves the previous file as it was).
pub(crate) struct StatusWriter {
    pub path: PathBuf,
    pub wal: Wal,
    pub board: Arc<Board>,
    /// What was written last (first: the file left by the previous run), for transition times.
    previous: Mutex<Option<BTreeMap<String, MetricsExporterStatus>>>,
}

impl StatusWriter {
    pub fn new(wal_dir: &Path, wal: Wal, board: Arc<Board>) -> StatusWriter {
        StatusWriter {
            path: wal_dir.join(STATUS_FILE_NAME),
            wal,
            board,
            previous: Mutex::new(None),
        }
    }

    pub async fn run(
        self,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> Result<(), StatusError> {
        let this = Arc::new(self);
        loop {
            // Until the source has published once (never marked seen here), the snapshot is the
            // empty placeholder: writing it would wipe the previous run's status.
            let (synced, snap) = {
                let current = snapshots.borrow();
                (current.has_changed(), current.clone())
            };
            if synced {
                let writer = this.clone();
                let written = tokio::task::spawn_blocking(move || writer.write_once(&snap)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("{e}"),
                    Err(e) => tracing::warn!("status writer task failed: {e}"),
                }
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(STATUS_INTERVAL) => {}
            }
        }
    }

    /// Computes every status and replaces the file.
    pub(crate) fn write_once(&self, snap: &Snapshot) -> Result<(), StatusError> {
        let now = Ticks::now();
        let stats = self.wal.stats()?;
        let dead = dead_letter_summaries(&self.wal)?;
        let retrying = retrying_outputs(&self.wal, &stats)?;
        let mut out: BTreeMap<String, MetricsExporterStatus> = BTreeMap::new();
        for exporter in snap.desired.values() {
            let runtime = self.board.get(&exporter.id.uid);
            let d = dead.get(&exporter.id.uid).cloned().unwrap_or_default();
            let r = retrying
                .get(&exporter.id.uid)
                .map_or(&[][..], Vec::as_slice);
            out.insert(
                exporter.key(),
                exporter_status(exporter, &runtime, &stats, &d, r, now),
            );
        }
        for (key, why) in &snap.rejected {
            if let Some(status) = rejected_status(why, now) {
                out.insert(key.clone(), status);
            }
        }
        {
            // Conditions keep their transition time while unchanged (across restarts too).
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            let previous =
                previous.get_or_insert_with(|| read_status_file(&self.path).unwrap_or_default());
            for (key, status) in &mut out {
                carry_transition_times(previous.get(key), status);
            }
            previous.clone_from(&out);
        }
        let json = serde_json::to_vec_pretty(&out).unwrap_or_default();
        write_atomically(&self.path, &json).map_err(|source| StatusError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Reads a status file written by [`StatusWriter`] (for resuming and for tests).
pub(crate) fn read_status_file(path: &Path) -> Option<BTreeMap<String, MetricsExporterStatus>> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}
