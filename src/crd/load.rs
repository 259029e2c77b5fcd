//! Reading resources from the text of a YAML or JSON file (`--manifests`, `check`, `preview`),
//! naming the document and path of whatever is wrong, and listing the fields this version ignores.
//!
//! YAML 1.1 reads the plain scalars `y`, `n`, `yes`, `no`, `on`, `off` (any case) as booleans, and
//! `5` or `1.5` as numbers; a text field given one (`valueColumns: [Cpu, N]`) is an error saying
//! what the value was read as and how to quote it (`"N"`), for every such field at once.

use std::cell::OnceCell;
use std::fmt;
use std::sync::LazyLock;

use serde_json::Value;
use serde_path_to_error::Segment;

use super::{API_VERSION, CrdError, KIND, MetricsExporter};

/// One `MetricsExporter` read from a file.
#[derive(Debug, Clone)]
pub struct LoadedResource {
    /// 1-based position of its document in the file.
    pub doc: usize,
    pub resource: MetricsExporter,
    /// Spec fields this version does not know (ignored), e.g. `spec.transform.valueColum`.
    pub unknown_fields: Vec<UnknownField>,
}

/// A spec field this version does not know, so ignores (its known counterpart keeps its default).
/// Displays as the warning both `check` and `run --manifests` give:
/// `spec.intervall: unknown field, ignored: did you mean spec.interval?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// `spec.transform.valueColum`.
    pub path: String,
    /// The known field it is closest to (spelling, case, or the right field at another level).
    pub suggestion: Option<String>,
}

impl fmt::Display for UnknownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: unknown field, ignored", self.path)?;
        match &self.suggestion {
            Some(known) => write!(f, ": did you mean {known}?"),
            None => f.write_str(" (check the spelling)"),
        }
    }
}

/// Reads every document of a YAML (`---`-separated) or JSON text. Documents of other kinds, and
/// `kind: List` wrappers' items of other kinds, are errors; empty documents are skipped.
/// `Err` only when the text as a whole cannot be parsed.
pub fn load_documents(text: &str) -> Result<Vec<Result<LoadedResource, CrdError>>, CrdError> {
    let values = parse_values(text)?;
    let written = Written {
        text,
        docs: OnceCell::new(),
    };
    let mut out = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let doc = i + 1;
        match value {
            Value::Null => {}
            Value::Object(ref map) if map.get("kind").and_then(|k| k.as_str()) == Some("List") => {
                let items = map.get("items").and_then(|i| i.as_array()).cloned();
                for (j, item) in items.unwrap_or_default().into_iter().enumerate() {
                    let at = Where {
                        written: &written,
                        doc: i,
                        item: Some(j),
                    };
                    out.push(load_one(doc, item, &at));
                }
            }
            value => {
                let at = Where {
                    written: &written,
                    doc: i,
                    item: None,
                };
                out.push(load_one(doc, value, &at))
            }
        }
    }
    Ok(out)
}

fn is_json(text: &str) -> bool {
    let trimmed = text.trim_start();
    trimmed.starts_with('{') || trimmed.starts_with('[')
}

fn parse_values(text: &str) -> Result<Vec<Value>, CrdError> {
    if is_json(text) {
        let value: Value =
            serde_json::from_str(text).map_err(|e| CrdError::Syntax(e.to_string()))?;
        return Ok(match value {
            Value::Array(items) => items,
            other => vec![other],
        });
    }
    serde_saphyr::from_multiple::<Value>(text).map_err(|e| {
        // The first line names the location; the rest is a source snippet.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        CrdError::Syntax(first.strip_prefix("error: ").unwrap_or(first).to_owned())
    })
}

/// The file's text, to find how a scalar was written: parsed again (only when needed) with YAML 1.2
/// booleans, where `N` stays the string `"N"`.
struct Written<'a> {
    text: &'a str,
    docs: OnceCell<Vec<Value>>,
}

/// One document (or `kind: List` item) of a [`Written`] text.
struct Where<'a> {
    written: &'a Written<'a>,
    doc: usize,
    item: Option<usize>,
}

impl Where<'_> {
    /// How the scalar at `path` was written, when the YAML 1.2 reading has it as a string.
    fn written_as(&self, path: &[Segment]) -> Option<String> {
        let written = self.written;
        if is_json(written.text) {
            return None;
        }
        let docs = written.docs.get_or_init(|| {
            let strict = serde_saphyr::options! { strict_booleans: true };
            serde_saphyr::from_multiple_with_options::<Value>(written.text, strict)
                .unwrap_or_default()
        });
        let mut value = docs.get(self.doc)?;
        if let Some(item) = self.item {
            value = value.get("items")?.get(item)?;
        }
        for segment in path {
            value = match segment {
                Segment::Seq { index } => value.get(index)?,
                Segment::Map { key } => value.get(key)?,
                _ => return None,
            };
        }
        value.as_str().map(str::to_owned)
    }
}

/// At most this many text fields given a boolean or number are reported per document.
const MAX_NOT_TEXT: usize = 32;

fn load_one(doc: usize, value: Value, at: &Where<'_>) -> Result<LoadedResource, CrdError> {
    let not_resource = |message: String| CrdError::NotAResource { doc, message };
    let map = value
        .as_object()
        .ok_or_else(|| not_resource("not a mapping: expected a MetricsExporter".into()))?;
    let api_version = map.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = map.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api_version != API_VERSION || kind != KIND {
        return Err(not_resource(format!(
            "apiVersion {api_version:?} kind {kind:?} is not a MetricsExporter (expected apiVersion {API_VERSION}, kind {KIND})"
        )));
    }
    // Each text field given a boolean or a number is reported and replaced by its text, so that
    // the next one is found too (serde stops at the first error).
    let mut value = value;
    let mut messages = Vec::new();
    let deserialized = loop {
        match serde_path_to_error::deserialize::<_, MetricsExporter>(&value) {
            Ok(resource) => break Some(resource),
            Err(e) => {
                let segments: Vec<Segment> = e.path().iter().cloned().collect();
                let inner = e.inner().to_string();
                let slot = lookup_mut(&mut value, &segments)
                    .filter(|s| s.is_boolean() || s.is_number())
                    .filter(|_| inner.ends_with("expected a string"));
                match slot {
                    Some(slot) if messages.len() < MAX_NOT_TEXT => {
                        let written = at.written_as(&segments);
                        let (message, text) = not_text(&e.path().to_string(), slot, written);
                        messages.push(message);
                        *slot = Value::String(text);
                    }
                    _ => {
                        messages.push(format!("{}: {inner}", e.path()));
                        break None;
                    }
                }
            }
        }
    };
    let key = key_of(&value);
    let resource = match deserialized {
        Some(resource) if messages.is_empty() => resource,
        _ => return Err(CrdError::Shape { doc, key, messages }),
    };
    if resource.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(CrdError::Shape {
            doc,
            key,
            messages: vec!["metadata.name: missing: name the resource".into()],
        });
    }
    let mut unknown_fields = Vec::new();
    // Nothing was replaced (`messages` is empty): `value` is the document as written.
    if let (Some(spec), Ok(known)) = (value.get("spec"), serde_json::to_value(&resource.spec)) {
        let mut paths = Vec::new();
        unknown_paths("spec", spec, &known, &mut paths);
        if !paths.is_empty() {
            let fields: &[String] = &KNOWN_FIELDS;
            unknown_fields = (paths.into_iter())
                .map(|path| UnknownField {
                    suggestion: suggest(&path, fields),
                    path,
                })
                .collect();
        }
    }
    Ok(LoadedResource {
        doc,
        resource,
        unknown_fields,
    })
}

/// `namespace/name` as the document gives it (`default`, `<unnamed>` when absent).
fn key_of(value: &Value) -> String {
    let meta = |field: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(field))
            .and_then(|n| n.as_str())
    };
    format!(
        "{}/{}",
        meta("namespace").unwrap_or("default"),
        meta("name").unwrap_or("<unnamed>")
    )
}

fn lookup_mut<'v>(value: &'v mut Value, path: &[Segment]) -> Option<&'v mut Value> {
    let mut value = value;
    for segment in path {
        value = match segment {
            Segment::Seq { index } => value.get_mut(index)?,
            Segment::Map { key } => value.get_mut(key)?,
            _ => return None,
        };
    }
    Some(value)
}

/// The problem of a text field whose value was read as a boolean or a number, and its text.
/// `written` is how the file spells it, when YAML read it as a boolean that it does not spell as
/// `true`/`false` (`N`).
fn not_text(path: &str, value: &Value, written: Option<String>) -> (String, String) {
    match (value, written) {
        (Value::Bool(b), Some(written)) => (
            format!(
                "{path}: {written} was read as the boolean {b}, not as text (YAML reads unquoted y, n, yes, no, on and off as booleans): quote it: \"{written}\""
            ),
            written,
        ),
        (Value::Bool(b), None) => (
            format!("{path}: {b} was read as a boolean, not as text: quote it: \"{b}\""),
            b.to_string(),
        ),
        (other, _) => (
            format!("{path}: {other} was read as a number, not as text: quote it: \"{other}\""),
            other.to_string(),
        ),
    }
}

/// Keys present in `original` that the typed round trip (`known`) dropped.
fn unknown_paths(path: &str, original: &Value, known: &Value, out: &mut Vec<String>) {
    let (Some(original), Some(known)) = (original.as_object(), known.as_object()) else {
        return;
    };
    for (key, value) in original {
        let child = format!("{path}.{key}");
        match known.get(key) {
            None if !value.is_null() => out.push(child),
            None => {}
            // Criteria keys are cluster-label names, not fields.
            Some(_) if path == "spec" && key == "criteria" => {}
            Some(k) => unknown_paths(&child, value, k, out),
        }
    }
}

/// [`known_fields`], built once per process: generating the CRD's schema costs more than loading a
/// whole file (a third of the `resource` fuzz target's time when it ran per unknown field).
static KNOWN_FIELDS: LazyLock<Vec<String>> = LazyLock::new(known_fields);

/// Every field of `spec` and `spec.transform` by path (`spec.interval`), from the CRD's schema.
fn known_fields() -> Vec<String> {
    use kube::CustomResourceExt;
    let crd = MetricsExporter::crd();
    let Some(schema) = (crd.spec.versions.first())
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut level = vec![(
        "spec".to_owned(),
        schema.properties.as_ref().and_then(|p| p.get("spec")),
    )];
    while let Some((path, Some(props))) = level.pop() {
        for (name, child) in props.properties.iter().flatten() {
            let child_path = format!("{path}.{name}");
            if child.properties.is_some() {
                level.push((child_path.clone(), Some(child)));
            }
            out.push(child_path);
        }
    }
    out
}

/// The known field an unknown `path` most likely meant: the same name (any case) at any level
/// (`spec.valueColumns` → `spec.transform.valueColumns`), else the closest spelling at its level.
fn suggest(path: &str, known: &[String]) -> Option<String> {
    let (parent, name) = path.rsplit_once('.')?;
    let name = name.to_lowercase();
    let split = |k: &String| {
        k.rsplit_once('.')
            .map(|(p, n)| (p.to_owned(), n.to_lowercase()))
    };
    let candidates: Vec<(&String, String, String)> = (known.iter())
        .filter_map(|k| split(k).map(|(p, n)| (k, p, n)))
        .collect();
    if let Some((k, _, _)) = (candidates.iter())
        .filter(|(_, _, n)| *n == name)
        .min_by_key(|(_, p, _)| *p != parent)
    {
        return Some((*k).clone());
    }
    (candidates.iter())
        .filter(|(_, p, _)| p == parent)
        .map(|(k, _, n)| (edit_distance(&name, n), n.chars().count(), *k))
        .filter(|(d, len, _)| *d <= (*len / 4).max(2))
        .min_by_key(|(d, _, _)| *d)
        .map(|(_, _, k)| k.clone())
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(0);
            let left = row.get(j).copied().unwrap_or(0);
            let value = (above + 1)
                .min(left + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}
