//! Prefilter predicates: what a module's descriptor (and a query's
//! pushdown) asks the host to check before the guest sees an event, in the
//! contract's terms (`match-op`, `predicate` in `sdk/wit/hunt.wit`). The
//! worker compiles and evaluates them; `quarry-query` derives them from a
//! query's `where` stages.

/// How a clause compares an event field with its values. All comparisons
/// are ASCII case-insensitive, as in Sigma.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum MatchOp {
    /// The field equals one of the values.
    Equals,
    /// The field contains one of the values.
    Contains,
    /// The field starts with one of the values.
    StartsWith,
    /// The field ends with one of the values.
    EndsWith,
    /// The field is present and non-empty; the values are ignored.
    Exists,
    /// The field matches one of the values as a regular expression (Rust
    /// `regex` syntax, unanchored, case-insensitive).
    Regex,
}

/// One clause: `field <op> any-of(values)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Clause {
    /// Field path (dotted paths reach into objects).
    pub field: String,
    /// The comparison.
    pub op: MatchOp,
    /// Candidate values; the clause holds when any of them matches. A clause
    /// with no values (other than [`MatchOp::Exists`]) matches nothing.
    pub values: Vec<String>,
}

impl Clause {
    /// A clause from its parts.
    pub fn new(
        field: impl Into<String>,
        op: MatchOp,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            field: field.into(),
            op,
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}
