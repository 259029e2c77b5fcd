//! `spec.criteriaExpression`: a CEL expression over this instance's cluster labels, compatible with
//! adx-mon (docs/design.md#criteria-expression). Pure.
//!
//! Semantics (adx-mon's `celutil.EvaluateCriteriaExpression`, not its docs):
//! - every cluster label is a `string` variable named by its key **as-is**: names and values are
//!   case-sensitive (adx-mon's docs claim lower-casing; its code and tests do not);
//! - the expression must evaluate to a `bool`; a blank expression is no constraint (never compiled);
//! - with `criteria` too, both must match (AND; the caller combines them).
//!
//! Outcomes: matched, not matched, or an [`ExpressionError`]. A syntax error is found when the spec
//! is validated ([`CriteriaExpression::compile`], once per resource change, never per window); the
//! others depend on the labels and are found by [`CriteriaExpression::evaluate`]:
//! - a name that is not a cluster label of this instance is an error even where `&&`/`||` would
//!   short-circuit past it: adx-mon declares one variable per label and type-checks, so such an
//!   expression never compiles there. We check the free names of the expression against the labels
//!   before running it, so the outcome does not depend on evaluation order;
//! - a result that is not a bool, and any runtime error (no such overload, bad regex, …).
//!
//! An error is never a silent `false`: the caller skips the resource (it may have been meant to be
//! excluded here) and reports why, in the status, a log line and the exporters gauge.
//!
//! Hostile input never crashes the process: the CEL parser (ANTLR-generated) and the evaluator
//! recurse, and some 70 nested parentheses overflow even an 8 MiB stack in a debug build (tokio's
//! workers have 2 MiB). So the source is capped at [`MAX_LEN`] bytes, nesting at [`MAX_DEPTH`]
//! levels (the parser's own limit), and parsing and evaluation run on a thread of their own with a
//! [`STACK`]-byte stack, which bounds what the remaining recursion (long `a + b + …` chains) needs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::parser::Expression;
use cel::{Context, Env, Value};

/// The field, as users write it; callers put it at the head of every message.
pub(crate) const FIELD: &str = "spec.criteriaExpression";

/// CEL's built-in type names, which resolve without being declared (`type(x) == string`).
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "timestamp",
    "type",
    "uint",
];

/// Longest expression accepted, in bytes (adx-mon's are one-liners).
pub(crate) const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, calls, lists and maps accepted.
pub(crate) const MAX_DEPTH: u16 = 32;
/// Stack of the thread that parses and evaluates; virtual until touched.
const STACK: usize = 64 << 20;

/// The standard CEL environment, built once (every evaluation shares it).
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled `criteriaExpression`. Equal when the source text is equal (the program is derived).
#[derive(Clone)]
pub struct CriteriaExpression {
    source: String,
    program: Arc<Expression>,
}

impl std::fmt::Debug for CriteriaExpression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CriteriaExpression")
            .field(&self.source)
            .finish()
    }
}

impl PartialEq for CriteriaExpression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why an expression could not say whether this instance runs the resource. Every message says
/// the fix; callers prefix it with [`FIELD`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error(
        "{expression:?} is not valid CEL: {detail}: fix the syntax, e.g. region == 'eastus' && environment in ['prod', 'staging']"
    )]
    Syntax { expression: String, detail: String },
    #[error(
        "refers to {}, which {} of this instance (it has: {labels}): add {} to --cluster-labels or remove {} from the expression (names are case-sensitive)",
        names.join(", "),
        if names.len() == 1 { "is not a cluster label" } else { "are not cluster labels" },
        if names.len() == 1 { "it" } else { "them" },
        if names.len() == 1 { "it" } else { "them" }
    )]
    UnknownLabel { names: Vec<String>, labels: String },
    #[error(
        "evaluated to {value} (a {kind}), not a bool: write a condition, e.g. region == 'eastus'"
    )]
    NotBool { value: String, kind: String },
    #[error("evaluation failed: {detail}: fix the expression (every label is a string)")]
    Runtime { detail: String },
}

impl CriteriaExpression {
    /// Parses `source` (trimmed). Errors are [`ExpressionError::Syntax`] with the parser's
    /// position and message on one line.
    pub(crate) fn compile(source: &str) -> Result<CriteriaExpression, ExpressionError> {
        let source = source.trim();
        if source.len() > MAX_LEN {
            return Err(ExpressionError::Syntax {
                expression: excerpt(source),
                detail: format!(
                    "{} bytes long, more than {MAX_LEN}: shorten it",
                    source.len()
                ),
            });
        }
        let parsed = on_big_stack(|| STDLIB.parser().max_recursion_depth(MAX_DEPTH).parse(source))?;
        let program = parsed.map_err(|e| ExpressionError::Syntax {
            expression: excerpt(source),
            detail: syntax_detail(&e),
        })?;
        Ok(CriteriaExpression {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// The expression as written (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this instance, with `labels`, runs the resource.
    pub fn evaluate(&self, labels: &BTreeMap<String, String>) -> Result<bool, ExpressionError> {
        on_big_stack(|| self.evaluate_here(labels))?
    }

    fn evaluate_here(&self, labels: &BTreeMap<String, String>) -> Result<bool, ExpressionError> {
        let mut unknown = BTreeSet::new();
        free_names(&self.program, &mut Vec::new(), &mut |name| {
            if !is_known(name, labels) {
                unknown.insert(name.to_owned());
            }
        });
        if !unknown.is_empty() {
            let labels = if labels.is_empty() {
                "none".to_owned()
            } else {
                labels.keys().cloned().collect::<Vec<_>>().join(", ")
            };
            return Err(ExpressionError::UnknownLabel {
                names: unknown.into_iter().collect(),
                labels,
            });
        }
        let mut context = Context::with_env(STDLIB.clone());
        for (key, value) in labels {
            context.add_variable_from_value(key.as_str(), value.as_str());
        }
        match Value::resolve(&self.program, &context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ExpressionError::NotBool {
                kind: other.type_of().to_string(),
                value: shown(&other),
            }),
            Err(e) => Err(ExpressionError::Runtime {
                detail: e.to_string(),
            }),
        }
    }
}

/// The parser's errors on one line. Its own display adds a source snippet over two more lines per
/// error: keep the first line of each, so the message fits a status condition and a log line.
fn syntax_detail(errors: &cel::ParseErrors) -> String {
    let lines: Vec<String> = errors
        .errors
        .iter()
        .map(|e| {
            let text = e.to_string();
            text.lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("ERROR: ")
                .to_owned()
        })
        .collect();
    // The depth limit surfaces as an ANTLR error dump plus follow-up errors: say it plainly.
    if lines.iter().any(|l| l.contains("Recursion limit")) {
        return format!("nested more than {MAX_DEPTH} levels deep: simplify it");
    }
    lines.join("; ")
}

/// At most 80 characters of `source`, for messages.
fn excerpt(source: &str) -> String {
    if source.chars().count() <= 80 {
        return source.to_owned();
    }
    format!("{}…", source.chars().take(79).collect::<String>())
}

/// Runs `f` on a thread with a [`STACK`]-byte stack (see the module doc) and waits for it.
fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, ExpressionError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("cel".into())
            .stack_size(STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| ExpressionError::Runtime {
                detail: format!("cannot start a thread for CEL: {e}"),
            })?;
        match handle.join() {
            Ok(value) => Ok(value),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A value for a message: strings quoted, others as CEL would print them where simple.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{:?}", s.as_str()),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => format!("{u}u"),
        Value::Float(f) => f.to_string(),
        Value::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

/// Whether a free `name` (a plain or dotted name such as `cluster.region`) resolves here: a
/// cluster label (a key may contain dots, as cel-go resolves the longest declared prefix), or a
/// built-in type name.
fn is_known(name: &str, labels: &BTreeMap<String, String>) -> bool {
    let mut prefix = name;
    loop {
        if labels.contains_key(prefix) || TYPE_NAMES.contains(&prefix) {
            return true;
        }
        match prefix.rsplit_once('.') {
            Some((head, _)) => prefix = head,
            None => return false,
        }
    }
}

/// Calls `found` with every name the expression reads that no enclosing comprehension (`exists`,
/// `all`, `map`, `filter`, …) binds. A field selection on a name (`a.b`) is reported whole, since a
/// cluster label key may itself contain dots.
fn free_names<'e>(e: &'e Expression, bound: &mut Vec<&'e str>, found: &mut impl FnMut(&str)) {
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            if !bound.contains(&name.as_str()) {
                found(name);
            }
        }
        Expr::Select(select) => match dotted(e) {
            Some((root, whole)) if !select.test => {
                if !bound.contains(&root) {
                    found(&whole);
                }
            }
            _ => free_names(&select.operand, bound, found),
        },
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                free_names(target, bound, found);
            }
            for arg in &call.args {
                free_names(arg, bound, found);
            }
        }
        Expr::List(list) => {
            for element in &list.elements {
                free_names(element, bound, found);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                entry_names(&entry.expr, bound, found);
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                entry_names(&entry.expr, bound, found);
            }
        }
        Expr::Comprehension(c) => {
            // The range and the initial accumulator are outside the loop's scope.
            free_names(&c.iter_range, bound, found);
            free_names(&c.accu_init, bound, found);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            free_names(&c.loop_cond, bound, found);
            free_names(&c.loop_step, bound, found);
            free_names(&c.result, bound, found);
            bound.truncate(depth);
        }
    }
}

fn entry_names<'e>(entry: &'e EntryExpr, bound: &mut Vec<&'e str>, found: &mut impl FnMut(&str)) {
    match entry {
        EntryExpr::StructField(f) => free_names(&f.value, bound, found),
        EntryExpr::MapEntry(m) => {
            free_names(&m.key, bound, found);
            free_names(&m.value, bound, found);
        }
    }
}

/// `a.b.c` as its root name and the whole dotted name, when `e` is only field selections on a name.
fn dotted(e: &Expression) -> Option<(&str, String)> {
    let mut fields = Vec::new();
    let mut at = e;
    loop {
        match &at.expr {
            Expr::Ident(root) => {
                fields.push(root.as_str());
                fields.reverse();
                return Some((root, fields.join(".")));
            }
            Expr::Select(s) if !s.test => {
                fields.push(s.field.as_str());
                at = &s.operand;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn eval(expr: &str, here: &BTreeMap<String, String>) -> Result<bool, ExpressionError> {
        CriteriaExpression::compile(expr)
            .expect("compiles")
            .evaluate(here)
    }

    fn here() -> BTreeMap<String, String> {
        labels([
            ("region", "eastus"),
            ("environment", "production"),
            ("cloud", "AzureCloud"),
            ("tier", "2"),
            ("cluster", "aks-prod-7"),
        ])
    }

    #[test]
    fn the_expressions_adx_mon_users_write() {
        let cases: &[(&str, bool)] = &[
            ("region == 'eastus'", true),
            ("region == 'westus'", false),
            ("region != 'westus'", true),
            ("region == 'eastus' && environment == 'production'", true),
            ("region == 'eastus' && environment == 'staging'", false),
            ("region == 'westus' || environment == 'production'", true),
            ("!(region == 'westus')", true),
            ("region in ['eastus', 'westus']", true),
            ("region in ['westus', 'centralus']", false),
            ("!(environment in ['dev', 'test'])", true),
            ("region.startsWith('east')", true),
            ("region.endsWith('us') && cloud.contains('Azure')", true),
            ("region.matches('^east.*$')", true),
            ("size(region) > 3", true),
            ("['eastus', 'westus'].exists(r, r == region)", true),
            ("['westus'].all(r, r != region)", true),
            (
                "(region == 'eastus' || region == 'westus') && environment == 'production'",
                true,
            ),
            ("['eastus'].exists_one(r, r == region)", true),
            (
                "['e', 'w'].map(p, p + 'astus').filter(r, r == region).size() == 1",
                true,
            ),
            ("int(tier) >= 2", true),
            ("cluster.matches('^aks-prod-[0-9]+$')", true),
            ("true", true),
            ("false", false),
        ];
        for (expr, want) in cases {
            assert_eq!(eval(expr, &here()), Ok(*want), "{expr}");
        }
    }

    #[test]
    fn names_and_values_are_case_sensitive() {
        let here = labels([("Region", "EastUS")]);
        assert_eq!(eval("Region == 'EastUS'", &here), Ok(true));
        assert_eq!(eval("Region == 'eastus'", &here), Ok(false));
        assert!(matches!(
            eval("region == 'EastUS'", &here),
            Err(ExpressionError::UnknownLabel { .. })
        ));
    }

    #[test]
    fn a_syntax_error_names_the_field_and_the_position() {
        let e = CriteriaExpression::compile("region == ").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ExpressionError::Syntax { .. }));
        assert!(
            text.starts_with("\"region ==\" is not valid CEL: <input>:1:"),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
        assert!(CriteriaExpression::compile("region = 'eastus'").is_err());
        assert!(CriteriaExpression::compile("region == 'eastus").is_err());
    }

    #[test]
    fn an_unknown_label_is_an_error_even_behind_a_short_circuit() {
        let want = Err(ExpressionError::UnknownLabel {
            names: vec!["zone".into()],
            labels: "cloud, cluster, environment, region, tier".into(),
        });
        assert_eq!(eval("zone == '1'", &here()), want);
        // adx-mon type-checks against the declared labels: this never runs there either.
        assert_eq!(eval("region == 'eastus' || zone == '1'", &here()), want);
        assert_eq!(eval("region == 'westus' && zone == '1'", &here()), want);
        let text = eval("zone == '1' && Region == 'x'", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            text,
            "refers to Region, zone, which are not cluster labels of this instance (it has: none): add them to --cluster-labels or remove them from the expression (names are case-sensitive)"
        );
    }

    #[test]
    fn comprehension_variables_and_type_names_are_not_labels() {
        assert_eq!(
            eval(
                "['a', 'b'].exists(x, x == region) || type(region) == string",
                &here()
            ),
            Ok(true)
        );
        // A comprehension variable is bound only inside its loop.
        assert!(matches!(
            eval("['a'].exists(x, x == 'a') && x == 'a'", &here()),
            Err(ExpressionError::UnknownLabel { names, .. }) if names == ["x"]
        ));
    }

    #[test]
    fn a_dotted_label_key_is_one_name() {
        let here = labels([("cluster.region", "eastus")]);
        assert_eq!(eval("cluster.region == 'eastus'", &here), Ok(true));
        assert!(matches!(
            eval("cluster.zone == '1'", &here),
            Err(ExpressionError::UnknownLabel { names, .. }) if names == ["cluster.zone"]
        ));
    }

    #[test]
    fn a_result_that_is_not_a_bool_is_an_error() {
        assert_eq!(
            eval("region", &here()),
            Err(ExpressionError::NotBool {
                value: "\"eastus\"".into(),
                kind: "string".into()
            })
        );
        let text = eval("size(region)", &here()).unwrap_err().to_string();
        assert_eq!(
            text,
            "evaluated to 6 (a int), not a bool: write a condition, e.g. region == 'eastus'"
        );
    }

    #[test]
    fn a_runtime_error_is_an_error() {
        // Labels are strings: comparing one with a number has no overload.
        let e = eval("region > 3", &here()).unwrap_err();
        assert!(matches!(e, ExpressionError::Runtime { .. }), "{e:?}");
        assert!(e.to_string().starts_with("evaluation failed: "), "{e}");
        assert!(matches!(
            eval("region.matches('(')", &here()),
            Err(ExpressionError::Runtime { .. })
        ));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_crash() {
        let deep = format!("{}true{}", "(".repeat(5000), ")".repeat(5000));
        let e = CriteriaExpression::compile(&deep).unwrap_err();
        assert!(e.to_string().contains("more than 4096"), "{e}");
        let nested = format!("{}true{}", "(".repeat(1000), ")".repeat(1000));
        let e = CriteriaExpression::compile(&nested).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{:?} is not valid CEL: nested more than 32 levels deep: simplify it: fix the syntax, e.g. region == 'eastus' && environment in ['prod', 'staging']",
                format!("{}…", "(".repeat(79))
            )
        );
        let fine = format!("{}true{}", "(".repeat(30), ")".repeat(30));
        assert_eq!(eval(&fine, &here()), Ok(true));
        // Long flat chains are accepted and evaluated (the thread's stack bounds their recursion).
        let chain = vec!["region == 'x'"; 230].join(" || ");
        assert_eq!(eval(&chain, &here()), Ok(false));
        let sum = format!("size(region) + {} > 0", vec!["1"; 1000].join(" + "));
        assert_eq!(eval(&sum, &here()), Ok(true));
        let nots = format!("{}true", "!".repeat(4000));
        assert_eq!(eval(&nots, &here()), Ok(true));
        let deep_sum = format!(
            "{}{}{} > 0",
            "(".repeat(31),
            vec!["1"; 900].join("+"),
            ")".repeat(31)
        );
        assert_eq!(eval(&deep_sum, &here()), Ok(true));
        let fields = format!("region{} == 'x'", ".x".repeat(1500));
        assert!(matches!(
            eval(&fields, &here()),
            Err(ExpressionError::Runtime { .. })
        ));
    }

    #[test]
    fn equality_follows_the_source_text() {
        let a = CriteriaExpression::compile(" region == 'eastus' ").unwrap();
        assert_eq!(
            a,
            CriteriaExpression::compile("region == 'eastus'").unwrap()
        );
        assert_eq!(a.source(), "region == 'eastus'");
        assert_ne!(
            a,
            CriteriaExpression::compile("region == 'westus'").unwrap()
        );
    }
}
