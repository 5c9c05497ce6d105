//! Building findings and collecting a task's output.

use std::fmt::Display;

use crate::{Aggregate, Finding, Output, Severity};

/// Builds a [`Finding`]; start with [`Finding::builder`].
///
/// Defaults: severity [`Severity::Medium`], confidence 50, no entity,
/// timestamp 0, no evidence, techniques or offsets. Techniques and offsets
/// are kept sorted and without duplicates, so that equal findings from
/// different runs compare equal.
///
/// ```
/// use quarry_sdk::{Finding, Severity};
///
/// let finding = Finding::builder("bruteforce/success-after-failures", "Logon after 12 failures")
///     .severity(Severity::High)
///     .confidence(80)
///     .entity("user:WIN\\admin")
///     .timestamp_ms(1_695_674_390_822)
///     .evidence("failures", 12)
///     .techniques(["T1110", "T1110.001"])
///     .offsets([41, 40])
///     .build();
/// assert_eq!(finding.offsets, vec![40, 41]);
/// assert_eq!(finding.evidence, vec![("failures".to_owned(), "12".to_owned())]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "call `build` to get the finding"]
pub struct FindingBuilder {
    finding: Finding,
}

impl Finding {
    /// Starts a finding for the detection `rule` (stable, `module/rule`) with
    /// a one-line human `title`.
    pub fn builder(rule: impl Into<String>, title: impl Into<String>) -> FindingBuilder {
        FindingBuilder {
            finding: Finding {
                rule: rule.into(),
                title: title.into(),
                severity: Severity::Medium,
                confidence: 50,
                entity: String::new(),
                timestamp_ms: 0,
                evidence: Vec::new(),
                techniques: Vec::new(),
                tags: Vec::new(),
                offsets: Vec::new(),
            },
        }
    }

    /// The value of the first evidence item named `key`.
    pub fn evidence_value(&self, key: &str) -> Option<&str> {
        self.evidence
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }
}

impl FindingBuilder {
    /// How bad it is if true.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.finding.severity = severity;
        self
    }

    /// How sure the module is, 0..=100; larger values are clamped to 100.
    pub fn confidence(mut self, confidence: u8) -> Self {
        self.finding.confidence = confidence.min(100);
        self
    }

    /// The entity the finding is about, such as `user:CORP\alice` or
    /// `host:WS01`. Triage dedupes on rule and entity, so normalise it.
    pub fn entity(mut self, entity: impl Into<String>) -> Self {
        self.finding.entity = entity.into();
        self
    }

    /// Time of the event that completed the finding (ms since the epoch).
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.finding.timestamp_ms = timestamp_ms;
        self
    }

    /// Adds one evidence item; evidence keeps the order in which it is added.
    pub fn evidence(mut self, key: impl Into<String>, value: impl Display) -> Self {
        self.finding.evidence.push((key.into(), value.to_string()));
        self
    }

    /// Adds an ATT&CK technique id (`T1110.001`).
    pub fn technique(self, id: impl Into<String>) -> Self {
        self.techniques([id])
    }

    /// Adds ATT&CK technique ids.
    pub fn techniques<I>(mut self, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.finding
            .techniques
            .extend(ids.into_iter().map(Into::into));
        self.finding.techniques.sort();
        self.finding.techniques.dedup();
        self
    }

    /// Adds a tag: a free-form label for triage and search (`sigma`,
    /// `attack.discovery`, `intel:bad-ips`), stored lower-case.
    pub fn tag(self, tag: impl Into<String>) -> Self {
        self.tags([tag])
    }

    /// Adds tags (see [`FindingBuilder::tag`]); duplicates are dropped.
    pub fn tags<I>(mut self, tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.finding.tags.extend(tags.into_iter().map(|tag| {
            let mut tag: String = tag.into();
            tag.make_ascii_lowercase();
            tag
        }));
        self.finding.tags.sort();
        self.finding.tags.dedup();
        self
    }

    /// Adds the shard offset of an event that is part of the finding.
    pub fn offset(self, offset: u64) -> Self {
        self.offsets([offset])
    }

    /// Adds the shard offsets of events that are part of the finding.
    pub fn offsets(mut self, offsets: impl IntoIterator<Item = u64>) -> Self {
        self.finding.offsets.extend(offsets);
        self.finding.offsets.sort_unstable();
        self.finding.offsets.dedup();
        self
    }

    /// The finished finding.
    pub fn build(self) -> Finding {
        self.finding
    }
}

impl From<FindingBuilder> for Finding {
    fn from(builder: FindingBuilder) -> Finding {
        builder.build()
    }
}

/// Collects the findings a [`Hunt::scan`](crate::Hunt::scan) call returns to
/// the host straight away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Emitter {
    findings: Vec<Finding>,
}

impl Emitter {
    /// An empty emitter.
    pub fn new() -> Self {
        Emitter::default()
    }

    /// Reports `finding` (a [`Finding`] or a [`FindingBuilder`]).
    pub fn emit(&mut self, finding: impl Into<Finding>) {
        self.findings.push(finding.into());
    }

    /// The findings emitted so far.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Number of findings emitted so far.
    pub fn len(&self) -> usize {
        self.findings.len()
    }

    /// Whether nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    /// The emitted findings, in emission order.
    pub fn into_findings(self) -> Vec<Finding> {
        self.findings
    }
}

// Written out because `Output` is generated: a derive would have to be
// requested for every WIT type, and the enums cannot derive `Default`.
#[allow(clippy::derivable_impls)]
impl Default for Output {
    fn default() -> Self {
        Output {
            findings: Vec::new(),
            aggregates: Vec::new(),
        }
    }
}

impl Output {
    /// An empty output.
    pub fn new() -> Self {
        Output::default()
    }

    /// Reports `finding` (a [`Finding`] or a [`FindingBuilder`]).
    pub fn emit(&mut self, finding: impl Into<Finding>) {
        self.findings.push(finding.into());
    }

    /// Adds an aggregate, such as [`Counts`](crate::Counts).
    pub fn aggregate(&mut self, aggregate: impl Into<Aggregate>) {
        self.aggregates.push(aggregate.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counts;

    #[test]
    fn builder_defaults_and_normalisation() {
        let finding = Finding::builder("m/r", "t")
            .confidence(250)
            .technique("T1110.001")
            .techniques(["T1110", "T1110.001"])
            .tags(["Credential-Access", "bruteforce"])
            .tag("bruteforce")
            .offset(9)
            .offsets([3, 9, 1])
            .build();
        assert_eq!(finding.severity, Severity::Medium);
        assert_eq!(finding.confidence, 100);
        assert_eq!(finding.entity, "");
        assert_eq!(finding.techniques, ["T1110", "T1110.001"]);
        assert_eq!(finding.tags, ["bruteforce", "credential-access"]);
        assert_eq!(finding.offsets, [1, 3, 9]);
        assert_eq!(finding.evidence_value("x"), None);
    }

    #[test]
    fn emitter_and_output_collect() {
        let mut emitter = Emitter::new();
        assert!(emitter.is_empty());
        emitter.emit(Finding::builder("m/a", "a"));
        emitter.emit(Finding::builder("m/b", "b").evidence("n", 2).build());
        assert_eq!(emitter.len(), 2);
        assert_eq!(emitter.findings()[1].evidence_value("n"), Some("2"));
        let findings = emitter.into_findings();
        assert_eq!(findings[0].rule, "m/a");

        let mut output = Output::new();
        output.emit(Finding::builder("m/c", "c"));
        output.aggregate(Counts::new("empty"));
        assert_eq!(output.findings.len(), 1);
        assert_eq!(output.aggregates[0].name, "empty");
    }
}
