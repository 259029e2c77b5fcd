//! Property functions behind the `cargo fuzz` targets in `fuzz/` (see `fuzz/README.md`): one per
//! decoder that reads bytes this process did not write itself — Kusto response bodies, WAL records,
//! resource files. Each takes arbitrary bytes, must return for every input, and panics only when a
//! property its doc states is violated; libFuzzer reports a panic as a finding.
//!
//! They live in the library, not in the fuzz crate, so stable `cargo test` replays the kept
//! regression inputs (`fuzz/regressions/TARGET/*`) and the seeds through the very same code without
//! nightly (tests below).

mod kusto;
mod resource;
mod wal;

pub use kusto::{kusto_v1, kusto_v2};
pub use resource::resource;
pub use wal::{wal_record, wal_seeds};

/// A target's property function: returns for every input, panics when a property fails.
pub type Property = fn(&[u8]);

/// Every fuzz target by name (its `fuzz/fuzz_targets/NAME.rs`, corpus and regressions directory).
pub const TARGETS: &[(&str, Property)] = &[
    ("kusto_v2", kusto_v2),
    ("kusto_v1", kusto_v1),
    ("wal_record", wal_record),
    ("resource", resource),
];

/// The property function of target `name`.
pub fn target(name: &str) -> Option<Property> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn repo(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    /// Regular files directly under `dir`, sorted; none when it does not exist.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn replay(f: Property, path: &Path) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f(&bytes);
    }

    /// Every input a fuzz run found and we fixed stays fixed.
    #[test]
    fn kept_regression_inputs_hold_every_property() {
        let root = repo("fuzz/regressions");
        let mut replayed = 0;
        for (name, f) in TARGETS {
            for path in files(&root.join(name)) {
                if path.file_name().is_some_and(|n| n == "README.md") {
                    continue;
                }
                replay(*f, &path);
                replayed += 1;
            }
        }
        // Directories named after no target would be replayed by nothing.
        for dir in std::fs::read_dir(&root)
            .expect("fuzz/regressions exists")
            .flatten()
        {
            let name = dir.file_name().to_string_lossy().into_owned();
            assert!(
                !dir.path().is_dir() || target(&name).is_some(),
                "fuzz/regressions/{name} names no fuzz target"
            );
        }
        assert!(
            replayed > 0,
            "no regression inputs under {}",
            root.display()
        );
    }

    /// Regular files anywhere below `dir`, sorted.
    fn files_below(dir: &Path) -> Vec<PathBuf> {
        let mut out = files(dir);
        for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if sub.path().is_dir() {
                out.extend(files_below(&sub.path()));
            }
        }
        out.sort();
        out
    }

    /// The seed corpus (what `fuzz/seed` copies) satisfies the properties: the project's own Kusto
    /// fixtures (`tests/fixtures/kusto/`, recorded and derived) through both decoders, the example
    /// resources, and records the WAL code writes.
    #[test]
    fn seeds_hold_every_property() {
        let fixtures = repo("tests/fixtures/kusto");
        let mut kusto = 0;
        for dir in ["recorded", "derived"] {
            for path in files_below(&fixtures.join(dir)) {
                replay(kusto_v2, &path);
                replay(kusto_v1, &path);
                kusto += 1;
            }
        }
        assert!(
            kusto >= 35,
            "only {kusto} Kusto fixtures under {}",
            fixtures.display()
        );
        let resources = files(&repo("tests/resources"));
        assert!(resources.len() >= 5);
        for path in &resources {
            replay(resource, path);
        }
        let seeds = wal_seeds();
        assert!(seeds.len() >= 5);
        for (_, bytes) in seeds {
            wal_record(&bytes);
        }
    }

    /// With `--features sdk-fixtures`: the Microsoft SDK-captured responses in the directory
    /// `$ADXEXPORTER_KUSTO_FIXTURES` names (outside the repository, never copied into it) as seeds too.
    #[cfg(feature = "sdk-fixtures")]
    #[test]
    fn sdk_fixture_seeds_hold_every_property() {
        let fixtures =
            std::path::PathBuf::from(std::env::var_os("ADXEXPORTER_KUSTO_FIXTURES").expect(
                "set ADXEXPORTER_KUSTO_FIXTURES to the SDK captures' directory (.ci/run does)",
            ));
        let mut kusto = 0;
        for dir in ["python", "go/v1", "go/v2"] {
            for path in files(&fixtures.join(dir)) {
                replay(kusto_v2, &path);
                replay(kusto_v1, &path);
                kusto += 1;
            }
        }
        assert!(
            kusto >= 20,
            "only {kusto} Kusto fixtures under {} (the sdk-fixtures feature needs them there)",
            fixtures.display()
        );
    }

    /// The fuzz crate (nightly-only to build) stays in step without building it: each target is the
    /// one-line call of its [`Property`] (whose type this crate checks), and each is a `[[bin]]`.
    #[test]
    fn fuzz_targets_call_the_listed_properties() {
        let manifest = std::fs::read_to_string(repo("fuzz/Cargo.toml")).unwrap();
        let sources = files(&repo("fuzz/fuzz_targets"));
        assert_eq!(
            sources.len(),
            TARGETS.len(),
            "one fuzz_targets/*.rs per target"
        );
        for (name, _) in TARGETS {
            let path = repo(&format!("fuzz/fuzz_targets/{name}.rs"));
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let call = format!("fuzz_target!(|data: &[u8]| adxexporter::fuzzing::{name}(data));");
            assert!(
                source.contains(&call),
                "{} does not call {call}",
                path.display()
            );
            let bin = format!("name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"");
            assert!(
                manifest.contains(&bin),
                "fuzz/Cargo.toml has no [[bin]] {name}"
            );
        }
    }

    /// With `ADXEXPORTER_FUZZ_WAL_SEEDS=DIR`, writes the WAL seeds there (`fuzz/seed` runs this).
    #[test]
    fn write_wal_seeds_when_asked() {
        let Some(dir) = std::env::var_os("ADXEXPORTER_FUZZ_WAL_SEEDS") else {
            return;
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in wal_seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
