//! Reading resources from the text of a YAML or JSON file (`--manifests`, `check`, `preview`),
//! naming the document and path of whatever is wrong, and listing the fields this version ignores.

use super::{API_VERSION, CrdError, KIND, MetricsExporter};

/// One `MetricsExporter` read from a file.
#[derive(Debug, Clone)]
pub struct LoadedResource {
    /// 1-based position of its document in the file.
    pub doc: usize,
    pub resource: MetricsExporter,
    /// Paths of spec fields this version does not know (ignored), e.g. `spec.transform.valueColum`.
    pub unknown_fields: Vec<String>,
}

/// Reads every document of a YAML (`---`-separated) or JSON text. Documents of other kinds, and
/// `kind: List` wrappers' items of other kinds, are errors; empty documents are skipped.
/// `Err` only when the text as a whole cannot be parsed.
pub fn load_documents(text: &str) -> Result<Vec<Result<LoadedResource, CrdError>>, CrdError> {
    let values = parse_values(text)?;
    let mut out = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let doc = i + 1;
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(ref map)
                if map.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                let items = map.get("items").and_then(|i| i.as_array()).cloned();
                for item in items.unwrap_or_default() {
                    out.push(load_one(doc, item));
                }
            }
            value => out.push(load_one(doc, value)),
        }
    }
    Ok(out)
}

fn parse_values(text: &str) -> Result<Vec<serde_json::Value>, CrdError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| CrdError::Syntax(e.to_string()))?;
        return Ok(match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        });
    }
    serde_saphyr::from_multiple::<serde_json::Value>(text).map_err(|e| {
        // The first line names the location; the rest is a source snippet.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        CrdError::Syntax(first.strip_prefix("error: ").unwrap_or(first).to_owned())
    })
}

fn load_one(doc: usize, value: serde_json::Value) -> Result<LoadedResource, CrdError> {
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
    let key = format!(
        "{}/{}",
        map.get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|n| n.as_str())
            .unwrap_or("default"),
        map.get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("<unnamed>")
    );
    let resource: MetricsExporter =
        serde_path_to_error::deserialize(&value).map_err(|e| CrdError::Shape {
            doc,
            key: key.clone(),
            message: format!("{}: {}", e.path(), e.inner()),
        })?;
    if resource.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(CrdError::Shape {
            doc,
            key,
            message: "metadata.name: missing: name the resource".into(),
        });
    }
    let mut unknown_fields = Vec::new();
    if let (Some(original), Ok(known)) = (map.get("spec"), serde_json::to_value(&resource.spec)) {
        unknown_paths("spec", original, &known, &mut unknown_fields);
    }
    Ok(LoadedResource {
        doc,
        resource,
        unknown_fields,
    })
}

/// Keys present in `original` that the typed round trip (`known`) dropped.
fn unknown_paths(
    path: &str,
    original: &serde_json::Value,
    known: &serde_json::Value,
    out: &mut Vec<String>,
) {
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
