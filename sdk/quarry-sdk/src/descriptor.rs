//! Builders for what a module says about itself.

use crate::{Descriptor, MatchOp, Predicate};

impl Descriptor {
    /// A descriptor for the module `name` (kebab-case) at `version`
    /// (use `env!("CARGO_PKG_VERSION")`), with no fields, prefilter or
    /// techniques yet.
    ///
    /// ```
    /// use quarry_sdk::{Descriptor, Predicate};
    ///
    /// let descriptor = Descriptor::new("bruteforce", "0.1.0")
    ///     .with_description("Repeated logon failures followed by a success.")
    ///     .with_fields(&["EventID", "TargetUserName"])
    ///     .with_predicate(Predicate::equals("EventID", &["4624", "4625"]))
    ///     .with_techniques(&["T1110", "T1110.001"]);
    /// assert_eq!(descriptor.fields.len(), 2);
    /// ```
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Descriptor {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            fields: Vec::new(),
            prefilter: Vec::new(),
            any_of: Vec::new(),
            techniques: Vec::new(),
        }
    }

    /// Sets the one-sentence description shown to hunters.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Appends the fields the module reads; usually the `NAMES` of a
    /// [`fields!`](crate::fields) module. Their order defines the indexes.
    pub fn with_fields(mut self, names: &[&str]) -> Self {
        self.fields
            .extend(names.iter().map(|&name| name.to_owned()));
        self
    }

    /// Adds a prefilter clause; all clauses must hold for an event to reach
    /// the module.
    pub fn with_predicate(mut self, predicate: Predicate) -> Self {
        self.prefilter.push(predicate);
        self
    }

    /// Adds a group of alternatives: at least one of `predicates` must hold
    /// for an event to reach the module (`EventID = 3` or `id.resp_h`
    /// exists, for network connections in Sysmon or Zeek form). Groups and
    /// [`with_predicate`](Descriptor::with_predicate) clauses are ANDed. An
    /// empty group lets nothing through.
    pub fn with_any_of(mut self, predicates: Vec<Predicate>) -> Self {
        self.any_of.push(predicates);
        self
    }

    /// Appends ATT&CK technique ids the module hunts for.
    pub fn with_techniques(mut self, ids: &[&str]) -> Self {
        self.techniques.extend(ids.iter().map(|&id| id.to_owned()));
        self
    }
}

impl Predicate {
    /// `field` compared with `values` by `op` (ASCII case-insensitive).
    pub fn new(field: impl Into<String>, op: MatchOp, values: &[&str]) -> Self {
        Predicate {
            field: field.into(),
            op,
            values: values.iter().map(|&value| value.to_owned()).collect(),
        }
    }

    /// `field` equals one of `values`.
    pub fn equals(field: impl Into<String>, values: &[&str]) -> Self {
        Predicate::new(field, MatchOp::Equals, values)
    }

    /// `field` contains one of `values`.
    pub fn contains(field: impl Into<String>, values: &[&str]) -> Self {
        Predicate::new(field, MatchOp::Contains, values)
    }

    /// `field` starts with one of `values`.
    pub fn starts_with(field: impl Into<String>, values: &[&str]) -> Self {
        Predicate::new(field, MatchOp::StartsWith, values)
    }

    /// `field` ends with one of `values`.
    pub fn ends_with(field: impl Into<String>, values: &[&str]) -> Self {
        Predicate::new(field, MatchOp::EndsWith, values)
    }

    /// `field` is present and non-empty.
    pub fn exists(field: impl Into<String>) -> Self {
        Predicate::new(field, MatchOp::Exists, &[])
    }

    /// `field` matches any of `patterns` (Rust `regex` syntax, unanchored,
    /// case-insensitive). Blocks cannot be skipped by a pattern, so prefer
    /// the other operators where they suffice.
    pub fn regex(field: &str, patterns: &[&str]) -> Self {
        Predicate::new(field, MatchOp::Regex, patterns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_descriptor_and_predicates() {
        let d = Descriptor::new("m", "1.2.3")
            .with_description("d")
            .with_fields(&["A"])
            .with_fields(&["B"])
            .with_predicate(Predicate::exists("A"))
            .with_predicate(Predicate::ends_with("B", &["x", "y"]))
            .with_any_of(vec![Predicate::exists("A"), Predicate::equals("B", &["z"])])
            .with_techniques(&["T1"]);
        assert_eq!(d.any_of.len(), 1);
        assert_eq!(d.any_of[0][1].op, MatchOp::Equals);
        assert_eq!(d.fields, ["A", "B"]);
        assert_eq!(d.prefilter[0].op, MatchOp::Exists);
        assert!(d.prefilter[0].values.is_empty());
        assert_eq!(d.prefilter[1].values, ["x", "y"]);
        assert_eq!(Predicate::contains("f", &["v"]).op, MatchOp::Contains);
        assert_eq!(Predicate::starts_with("f", &["v"]).op, MatchOp::StartsWith);
        assert_eq!(d.techniques, ["T1"]);
    }
}
