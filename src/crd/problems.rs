//! What validation reports: one [`SpecProblem`] per thing wrong with a spec, each naming its field
//! and the fix, collected all at once.

/// One thing wrong with a spec: the field (`spec.interval`) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub(super) struct Problems(pub(super) Vec<SpecProblem>);

impl Problems {
    pub(super) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecProblem {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// A present, non-blank string.
pub(super) fn non_blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}
