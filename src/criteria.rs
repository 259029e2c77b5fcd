//! Which resources this instance runs, from its cluster labels (docs/design.md#criteria). Pure.
//!
//! `criteria` matches when, for every key, this instance's cluster label with that key
//! (case-insensitive) has a value equal (case-insensitive) to one of the listed values: AND across
//! keys, OR within a key. An empty map matches; a key the instance lacks does not. This follows
//! adx-mon's design, not its Go code (which ORs across keys). A non-match carries a sentence for
//! logs, metrics and `adxexporter check --cluster-labels`, naming the first failing key.
//!
//! [`place`] combines it with `criteriaExpression` ([`expression`]): both must match (AND, as in
//! adx-mon). The map is checked first: a resource whose map excludes this instance is skipped even
//! when its expression could not be evaluated here (it is another instance's business, and only
//! instances that process a resource write its status, docs/design.md#criteria).
use std::collections::BTreeMap;

pub mod expression;

use expression::{CriteriaExpression, ExpressionError};

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriteriaMatch {
    Matches,
    /// Why not, e.g. `criteria region=[westus] does not match cluster label region=eastus`.
    NoMatch {
        reason: String,
    },
}

#[cfg(test)]
impl CriteriaMatch {
    fn is_match(&self) -> bool {
        matches!(self, CriteriaMatch::Matches)
    }
}

/// Evaluates `criteria` against this instance's cluster labels (AND across keys, OR within one).
pub fn evaluate(
    criteria: &BTreeMap<String, Vec<String>>,
    labels: &BTreeMap<String, String>,
) -> CriteriaMatch {
    // The reason is formatted only on a miss: evaluation runs for every resource on every change.
    let shown = |key: &str, wanted: &[String]| format!("criteria {key}=[{}]", wanted.join(","));
    for (key, wanted) in criteria {
        let Some((label_key, value)) = labels.iter().find(|(k, _)| same(k, key)) else {
            return CriteriaMatch::NoMatch {
                reason: format!(
                    "{} needs cluster label {key}, which this instance does not have",
                    shown(key, wanted)
                ),
            };
        };
        if !wanted.iter().any(|w| same(w, value)) {
            return CriteriaMatch::NoMatch {
                reason: format!(
                    "{} does not match cluster label {label_key}={value}",
                    shown(key, wanted)
                ),
            };
        }
    }
    CriteriaMatch::Matches
}

/// Whether this instance runs a resource, from its `criteria` and its compiled `criteriaExpression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    Runs,
    /// Not meant for this instance: exactly like a criteria mismatch (never queried, no status).
    Skipped(String),
    /// The expression cannot be evaluated with this instance's labels: the resource is skipped
    /// (it may have been meant to exclude this instance) and the error is reported.
    Error(ExpressionError),
}

/// `criteria` AND `expression` against this instance's cluster labels.
pub(crate) fn place(
    criteria: &BTreeMap<String, Vec<String>>,
    expression: Option<&CriteriaExpression>,
    labels: &BTreeMap<String, String>,
) -> Placement {
    if let CriteriaMatch::NoMatch { reason } = evaluate(criteria, labels) {
        return Placement::Skipped(reason);
    }
    let Some(expression) = expression else {
        return Placement::Runs;
    };
    match expression.evaluate(labels) {
        Ok(true) => Placement::Runs,
        Ok(false) => Placement::Skipped(format!(
            "criteriaExpression {} is false for cluster labels {}",
            expression.source(),
            shown_labels(labels)
        )),
        Err(e) => Placement::Error(e),
    }
}

/// `k=v,k2=v2`, or `(none)`.
fn shown_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "(none)".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Case-insensitive equality (Unicode lower-casing, with an allocation-free ASCII path).
fn same(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.to_lowercase() == b.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map<const N: usize>(pairs: [(&str, &[&str]); N]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    fn labels<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn and_across_keys_or_within_a_key() {
        let here = labels([("region", "eastus"), ("env", "prod")]);
        assert!(evaluate(&map([("region", &["westus", "eastus"])]), &here).is_match());
        assert!(evaluate(&map([("region", &["eastus"]), ("env", &["prod"])]), &here).is_match());
        assert_eq!(
            evaluate(&map([("region", &["eastus"]), ("env", &["dev"])]), &here),
            CriteriaMatch::NoMatch {
                reason: "criteria env=[dev] does not match cluster label env=prod".into()
            }
        );
    }

    #[test]
    fn keys_and_values_are_case_insensitive() {
        let here = labels([("Region", "EastUS")]);
        assert!(evaluate(&map([("REGION", &["eastus"])]), &here).is_match());
    }

    #[test]
    fn reasons_name_the_failing_key() {
        assert_eq!(
            evaluate(
                &map([("region", &["westus"])]),
                &labels([("region", "eastus")])
            ),
            CriteriaMatch::NoMatch {
                reason: "criteria region=[westus] does not match cluster label region=eastus"
                    .into()
            }
        );
        assert_eq!(
            evaluate(&map([("region", &["westus"])]), &BTreeMap::new()),
            CriteriaMatch::NoMatch {
                reason: "criteria region=[westus] needs cluster label region, which this instance does not have".into()
            }
        );
    }

    fn expr(source: &str) -> CriteriaExpression {
        CriteriaExpression::compile(source).expect("compiles")
    }

    #[test]
    fn criteria_and_expression_must_both_match() {
        let here = labels([("region", "eastus"), ("env", "prod")]);
        let east = map([("region", &["EASTUS"])]);
        let west = map([("region", &["westus"])]);
        let prod = expr("env == 'prod'");
        let dev = expr("env == 'dev'");
        assert_eq!(place(&east, Some(&prod), &here), Placement::Runs);
        assert_eq!(place(&BTreeMap::new(), Some(&prod), &here), Placement::Runs);
        assert_eq!(place(&east, None, &here), Placement::Runs);
        assert_eq!(
            place(&east, Some(&dev), &here),
            Placement::Skipped(
                "criteriaExpression env == 'dev' is false for cluster labels env=prod,region=eastus"
                    .into()
            )
        );
        assert!(matches!(
            place(&west, Some(&prod), &here),
            Placement::Skipped(r) if r.contains("westus")
        ));
    }

    #[test]
    fn the_map_is_checked_before_an_expression_error() {
        let here = labels([("region", "eastus")]);
        let broken = expr("zone == '1'");
        assert!(matches!(
            place(&map([("region", &["westus"])]), Some(&broken), &here),
            Placement::Skipped(_)
        ));
        assert!(matches!(
            place(&BTreeMap::new(), Some(&broken), &here),
            Placement::Error(ExpressionError::UnknownLabel { .. })
        ));
    }

    fn arb_criteria() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
        prop::collection::btree_map(
            "[a-c]{1,2}",
            prop::collection::vec("[a-cA-C]{1,2}", 0..3),
            0..4,
        )
    }

    fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map("[a-c]{1,2}", "[a-cA-C]{1,2}", 0..4)
    }

    proptest! {
        #[test]
        fn empty_criteria_match_every_instance(l in arb_labels()) {
            prop_assert!(evaluate(&BTreeMap::new(), &l).is_match());
        }

        #[test]
        fn criteria_are_the_and_of_their_keys(c in arb_criteria(), l in arb_labels()) {
            let each = c.iter().all(|(k, v)| {
                evaluate(&BTreeMap::from([(k.clone(), v.clone())]), &l).is_match()
            });
            prop_assert_eq!(evaluate(&c, &l).is_match(), each);
        }

        #[test]
        fn one_key_is_the_or_of_its_values(k in "[a-c]{1,2}", vs in prop::collection::vec("[a-cA-C]{1,2}", 1..4), l in arb_labels()) {
            let any = vs.iter().any(|v| evaluate(&BTreeMap::from([(k.clone(), vec![v.clone()])]), &l).is_match());
            prop_assert_eq!(evaluate(&BTreeMap::from([(k, vs)]), &l).is_match(), any);
        }

        #[test]
        fn case_never_changes_the_outcome(c in arb_criteria(), l in arb_labels()) {
            let upper: BTreeMap<String, Vec<String>> = c.iter()
                .map(|(k, v)| (k.to_uppercase(), v.iter().map(|x| x.to_uppercase()).collect()))
                .collect();
            prop_assert_eq!(evaluate(&c, &l).is_match(), evaluate(&upper, &l).is_match());
        }

        #[test]
        fn a_missing_key_never_matches(c in arb_criteria(), l in arb_labels()) {
            let lacks_one = c.keys().any(|k| !l.keys().any(|lk| lk.eq_ignore_ascii_case(k)));
            if lacks_one {
                prop_assert!(!evaluate(&c, &l).is_match());
            }
        }

        #[test]
        fn unrelated_labels_never_change_the_outcome(c in arb_criteria(), l in arb_labels(), extra in "[x-z]{1,3}", v in "[a-z]{0,3}") {
            let mut more = l.clone();
            more.insert(extra, v);
            prop_assert_eq!(evaluate(&c, &l).is_match(), evaluate(&c, &more).is_match());
        }
    }
}
