//! The layering rule as a test (docs/design.md#layers): every top-level module of `src/` has a rank,
//! and a module may import (`crate::<module>`) only modules of a lower rank — leaves first, then the
//! stages in the order data flows through them, then the commands that wire them. Inside a module,
//! no two of its files import each other in a circle (`mod.rs`, which declares and re-exports the
//! others, is left out of that check). Unit-test code (`#[cfg(test)] mod tests` and `tests.rs`) is
//! exempt: a test may build its inputs with any stage.
//!
//! Reads the source as text: a `crate::x` path anywhere outside comments counts as an import of `x`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may import only modules listed before it.
const RANKS: &[(&str, &str)] = &[
    // Leaves: vocabulary every stage may use; each imports only leaves above it.
    ("time", "Kusto ticks, RFC 3339, timespans, durations"),
    ("tls", "TLS settings and the one crypto provider"),
    ("azure", "Azure AD identities and bearer tokens"),
    ("backoff", "retry delays"),
    ("prompb", "remote-write messages and their encoder"),
    ("exposition", "Prometheus text exposition"),
    ("shard", "which replica owns which resource"),
    ("criteria", "cluster-label criteria and CEL expressions"),
    (
        "crd",
        "the MetricsExporter resource, its validation and loading",
    ),
    ("telemetry", "logs, metric names, the admin endpoints"),
    // Stages, in data-flow order of their vocabulary.
    ("query", "the Kusto client and its decoders"),
    ("transform", "rows to samples"),
    ("wal", "the durable store"),
    ("registry", "the desired exporters"),
    ("source", "Kubernetes watch and manifests directory"),
    ("status", "status board, writers and gauges"),
    ("sink", "outputs and their drain loops"),
    ("schedule", "windows and the exporter tasks"),
    // Test-only code compiled into unit tests and the fuzz crate.
    ("fuzzing", "properties the fuzz targets check"),
    ("kube_support", "the fake API server (unit tests)"),
    // Wiring.
    ("cli", "flags into per-module configs"),
    ("cmd", "offline subcommands"),
    ("app", "wiring of `run`"),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The product code of a file: comments removed, the trailing unit-test module cut off.
fn product_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<name>` path in `code`, with the rest of the path (`crate::wal::tables::X` →
/// `("wal", "tables::X")`).
fn crate_paths(code: &str) -> Vec<(String, String)> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(ident) {
            continue; // `adxexporter_crate::` or the like
        }
        let path: String = rest.chars().take_while(|&c| ident(c) || c == ':').collect();
        let mut parts = path.splitn(2, "::");
        let module = parts.next().unwrap_or_default().to_owned();
        let tail = parts.next().unwrap_or_default().to_owned();
        if !module.is_empty() {
            out.push((module, tail));
        }
    }
    out
}

/// `src/wal/append.rs` → (`wal`, `append`); `src/time.rs` → (`time`, ``); `src/wal/mod.rs` → (`wal`, `mod`).
fn module_of(path: &Path) -> (String, String) {
    let rel = path.strip_prefix(src()).unwrap();
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    match parts.as_slice() {
        [file] => (file.clone(), String::new()),
        [dir, rest @ ..] => (dir.clone(), rest.join("/")),
        [] => unreachable!(),
    }
}

fn rank(module: &str) -> Option<usize> {
    RANKS.iter().position(|(m, _)| *m == module)
}

fn files() -> Vec<(PathBuf, String)> {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter(|p| !p.ends_with("tests.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, product_code(&text))
        })
        .collect()
}

#[test]
fn every_module_has_a_rank() {
    let mut missing = BTreeSet::new();
    for (path, _) in files() {
        let (module, _) = module_of(&path);
        if !matches!(module.as_str(), "main" | "lib") && rank(&module).is_none() {
            missing.insert(module);
        }
    }
    assert!(
        missing.is_empty(),
        "modules without a rank in tests/layers.rs: {missing:?}"
    );
}

#[test]
fn no_module_imports_a_later_one() {
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (path, code) in files() {
        let (module, _) = module_of(&path);
        let Some(own) = rank(&module) else { continue };
        for (target, tail) in crate_paths(&code) {
            seen += 1;
            if target == module {
                continue;
            }
            match rank(&target) {
                Some(r) if r < own => {}
                Some(_) => wrong.push(format!(
                    "{}: {module} imports crate::{target}::{tail}, a later layer",
                    path.strip_prefix(src()).unwrap().display()
                )),
                None => {} // a crate-root item (e.g. a macro), not a module
            }
        }
    }
    assert!(
        seen > 100,
        "only {seen} crate:: paths read: is the parser broken?"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_circle_between_the_files_of_a_module() {
    // Per module: file → sibling files it names (`super::x`, `crate::m::x`, or `x::` after `use super::*`).
    let mut graphs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let all = files();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, _) in &all {
        let (module, file) = module_of(path);
        if !file.is_empty() && file != "mod" {
            siblings.entry(module).or_default().insert(file);
        }
    }
    for (path, code) in &all {
        let (module, file) = module_of(path);
        if file.is_empty() || file == "mod" {
            continue;
        }
        let names = siblings.get(&module).cloned().unwrap_or_default();
        let mut edges = BTreeSet::new();
        for (target, tail) in crate_paths(code) {
            if target == module {
                let first = tail.split("::").next().unwrap_or_default();
                if names.contains(first) && first != file {
                    edges.insert(first.to_owned());
                }
            }
        }
        let mut rest = code.as_str();
        while let Some(at) = rest.find("super::") {
            rest = &rest[at + "super::".len()..];
            let first: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if names.contains(&first) && first != file {
                edges.insert(first);
            }
        }
        graphs.entry(module).or_default().insert(file, edges);
    }
    let mut circles = Vec::new();
    for (module, graph) in &graphs {
        for start in graph.keys() {
            // Depth-first search for a path back to `start`.
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut visited = BTreeSet::new();
            while let Some((node, trail)) = stack.pop() {
                for next in graph.get(&node).into_iter().flatten() {
                    if next == start {
                        circles.push(format!("{module}: {} -> {start}", trail.join(" -> ")));
                    } else if visited.insert(next.clone()) {
                        let mut t = trail.clone();
                        t.push(next.clone());
                        stack.push((next.clone(), t));
                    }
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "circles between files:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_parser_sees_what_it_must() {
    let code = product_code(
        "use crate::wal::{Wal, WalError};\n// crate::sink in a comment\nfn f() { crate::time::Ticks::now(); }\n#[cfg(test)]\nmod tests {\n use crate::app;\n}\n",
    );
    let got: Vec<String> = crate_paths(&code).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, ["wal", "time"]);
}

/// A file holds one job: none under `src/` is over 1,000 lines (unit tests may live in a sibling
/// `tests.rs`, which is held to the same bound).
#[test]
fn no_source_file_is_over_1000_lines() {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    let long: Vec<String> = paths
        .iter()
        .map(|p| (p, std::fs::read_to_string(p).unwrap().lines().count()))
        .filter(|(_, n)| *n > 1000)
        .map(|(p, n)| format!("{}: {n} lines", p.display()))
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}
