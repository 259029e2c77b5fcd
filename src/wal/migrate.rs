//! Schema versions of the WAL store and the steps between them (`migrations/README.md`).
//!
//! The `meta` table holds `format` = `adxexporter-wal` and `schema_version` (u32 little-endian).
//! On open: a store with no tables is initialised at [`SCHEMA_VERSION`]; an older version runs every
//! `Step` from its version up, each step and its version bump in ONE write transaction (a crash
//! mid-migration leaves the store at the last completed step); a newer version is refused, never reset.
//! A redb file holding other tables and no `meta` is not ours and is refused too.

use redb::{Database, ReadableDatabase, TableError, WriteTransaction};

use super::tables::META;

/// The schema version this build writes and the newest it understands.
pub const SCHEMA_VERSION: u32 = 1;
/// `meta["format"]`: marks a redb file as an adxexporter WAL.
pub(crate) const FORMAT: &[u8] = b"adxexporter-wal";
pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";

/// One version step: turns a store at `from` into one at `from + 1`; documented in `doc`.
pub(crate) struct Step {
    pub from: u32,
    pub doc: &'static str,
    pub apply: fn(&WriteTransaction) -> Result<(), MigrateError>,
}

/// Every step, oldest first. v1 is the first version: none yet. Add `migrations/000N-*.md` with each.
pub(crate) const STEPS: &[Step] = &[];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("schema version {found} but this adxexporter understands up to {supported}")]
    TooNew { found: u32, supported: u32 },
    #[error(
        "a redb file that is not an adxexporter WAL (no `meta` table, or `format` is not adxexporter-wal)"
    )]
    Foreign,
    #[error("meta `{key}` is malformed")]
    MalformedMeta { key: &'static str },
    #[error("no migration step from schema version {from}")]
    MissingStep { from: u32 },
    #[error("migration step {from}→{} ({doc}) failed: {detail}", from + 1)]
    StepFailed {
        from: u32,
        doc: &'static str,
        detail: String,
    },
    #[error("store error while migrating: {0}")]
    Store(#[from] redb::Error),
}

fn store(e: impl Into<redb::Error>) -> MigrateError {
    MigrateError::Store(e.into())
}

/// What `prepare` found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepared {
    Initialised,
    Current,
    Migrated { from: u32 },
}

/// Initialise a fresh store or bring an older one to [`SCHEMA_VERSION`].
pub(crate) fn prepare(db: &Database) -> Result<Prepared, MigrateError> {
    prepare_with(db, SCHEMA_VERSION, STEPS)
}

/// `prepare` with an explicit target and step list, so the mechanism is testable before v2 exists.
pub(crate) fn prepare_with(
    db: &Database,
    target: u32,
    steps: &[Step],
) -> Result<Prepared, MigrateError> {
    let Some(found) = read_version(db)? else {
        initialise(db, target)?;
        return Ok(Prepared::Initialised);
    };
    if found > target {
        return Err(MigrateError::TooNew {
            found,
            supported: target,
        });
    }
    if found == target {
        return Ok(Prepared::Current);
    }
    for from in found..target {
        let step = steps
            .iter()
            .find(|s| s.from == from)
            .ok_or(MigrateError::MissingStep { from })?;
        run_step(db, step)?;
    }
    Ok(Prepared::Migrated { from: found })
}

/// `None` for a store with no tables at all (new, or created by a crash before its first commit).
pub(crate) fn read_version(db: &impl ReadableDatabase) -> Result<Option<u32>, MigrateError> {
    let tx = db.begin_read().map_err(store)?;
    let meta = match tx.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => {
            let has_tables = tx.list_tables().map_err(store)?.next().is_some();
            return if has_tables {
                Err(MigrateError::Foreign)
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(store(e)),
    };
    let format = meta.get(META_FORMAT).map_err(store)?;
    if format.as_ref().map(|f| f.value()) != Some(FORMAT) {
        return Err(MigrateError::Foreign);
    }
    let version =
        meta.get(META_SCHEMA_VERSION)
            .map_err(store)?
            .ok_or(MigrateError::MalformedMeta {
                key: META_SCHEMA_VERSION,
            })?;
    let bytes: [u8; 4] = version
        .value()
        .try_into()
        .map_err(|_| MigrateError::MalformedMeta {
            key: META_SCHEMA_VERSION,
        })?;
    Ok(Some(u32::from_le_bytes(bytes)))
}

fn initialise(db: &Database, version: u32) -> Result<(), MigrateError> {
    let tx = db.begin_write().map_err(store)?;
    {
        let mut meta = tx.open_table(META).map_err(store)?;
        meta.insert(META_FORMAT, FORMAT).map_err(store)?;
        meta.insert(META_SCHEMA_VERSION, version.to_le_bytes().as_slice())
            .map_err(store)?;
    }
    super::tables::create_tables(&tx).map_err(store)?;
    tx.commit().map_err(store)
}

fn run_step(db: &Database, step: &Step) -> Result<(), MigrateError> {
    let tx = db.begin_write().map_err(store)?;
    (step.apply)(&tx).map_err(|e| MigrateError::StepFailed {
        from: step.from,
        doc: step.doc,
        detail: e.to_string(),
    })?;
    {
        let mut meta = tx.open_table(META).map_err(store)?;
        let next = step.from + 1;
        meta.insert(META_SCHEMA_VERSION, next.to_le_bytes().as_slice())
            .map_err(store)?;
    }
    tx.commit().map_err(store)?;
    tracing::info!(
        from = step.from,
        to = step.from + 1,
        doc = step.doc,
        "WAL schema migrated"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const MARK: TableDefinition<&str, u64> = TableDefinition::new("test_mark");

    fn mark_v2(tx: &WriteTransaction) -> Result<(), MigrateError> {
        let mut t = tx.open_table(MARK).map_err(store)?;
        t.insert("v2", 2).map_err(store)?;
        Ok(())
    }

    fn failing(_: &WriteTransaction) -> Result<(), MigrateError> {
        Err(MigrateError::MalformedMeta { key: "test" })
    }

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("wal.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn fresh_store_is_initialised_then_current() {
        let (_d, db) = db();
        assert_eq!(prepare(&db).unwrap(), Prepared::Initialised);
        assert_eq!(read_version(&db).unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(prepare(&db).unwrap(), Prepared::Current);
    }

    #[test]
    fn older_store_runs_each_step_and_bumps_the_version() {
        let (_d, db) = db();
        prepare_with(&db, 1, &[]).unwrap();
        let steps = [Step {
            from: 1,
            doc: "migrations/0002-test.md",
            apply: mark_v2,
        }];
        assert_eq!(
            prepare_with(&db, 2, &steps).unwrap(),
            Prepared::Migrated { from: 1 }
        );
        assert_eq!(read_version(&db).unwrap(), Some(2));
        let tx = db.begin_read().unwrap();
        assert_eq!(
            tx.open_table(MARK)
                .unwrap()
                .get("v2")
                .unwrap()
                .unwrap()
                .value(),
            2
        );
    }

    #[test]
    fn failed_step_leaves_the_version_untouched() {
        let (_d, db) = db();
        prepare_with(&db, 1, &[]).unwrap();
        let steps = [Step {
            from: 1,
            doc: "migrations/0002-test.md",
            apply: failing,
        }];
        let err = prepare_with(&db, 2, &steps).unwrap_err();
        assert!(
            matches!(err, MigrateError::StepFailed { from: 1, .. }),
            "{err}"
        );
        assert_eq!(read_version(&db).unwrap(), Some(1));
    }

    #[test]
    fn missing_step_is_an_error() {
        let (_d, db) = db();
        prepare_with(&db, 1, &[]).unwrap();
        assert!(matches!(
            prepare_with(&db, 3, &[]),
            Err(MigrateError::MissingStep { from: 1 })
        ));
    }

    #[test]
    fn newer_store_is_refused() {
        let (_d, db) = db();
        prepare_with(&db, 5, &[]).unwrap();
        assert!(matches!(
            prepare(&db),
            Err(MigrateError::TooNew {
                found: 5,
                supported: SCHEMA_VERSION
            })
        ));
    }

    #[test]
    fn foreign_redb_file_is_refused() {
        let (_d, db) = db();
        let tx = db.begin_write().unwrap();
        tx.open_table(MARK).unwrap().insert("x", 1).unwrap();
        tx.commit().unwrap();
        assert!(matches!(prepare(&db), Err(MigrateError::Foreign)));
    }
}
