//! The host-side prefilter a hunt module declares.
//!
//! A module's descriptor lists clauses (`field op any-of(values)`); the worker
//! evaluates them on every event before the guest sees anything, so a module
//! hunting failed logons never pays for the millions of process events in a
//! shard. Semantics follow the module contract (`sdk/wit/hunt.wit`): the
//! prefilter is the AND of its clauses and of its any-of groups (a group
//! holds when one of its clauses does), a clause holds when any of its values
//! matches, comparisons are ASCII case-insensitive as in Sigma, and an empty
//! prefilter lets every event through.

use std::borrow::Cow;

use serde_json::Value;

use crate::columnar::{ColumnBlock, FieldTexts, Found};
use crate::event::{ALL_VALUES_FIELD, all_values_text, lookup, value_text};
use crate::shard::segment::BlockError;

pub use quarry_contract::predicate::{Clause, MatchOp};

/// A compiled prefilter: the AND of its clauses and of its any-of groups.
///
/// Compiling lowercases every value once, so evaluating a clause does not
/// allocate except to lowercase a field for [`MatchOp::Contains`].
#[derive(Debug, Clone, Default)]
pub struct Prefilter {
    clauses: Vec<CompiledClause>,
    /// Each group holds when one of its clauses does.
    any_of: Vec<Vec<CompiledClause>>,
}

#[derive(Debug, Clone)]
struct CompiledClause {
    field: String,
    op: MatchOp,
    /// ASCII-lowercased values.
    needles: Vec<String>,
    /// For [`MatchOp::Regex`]: one pattern matching any of the values.
    regex: Option<regex::Regex>,
}

/// Largest compiled regular expression a module may declare; bounds the
/// host memory one hostile descriptor can take.
const MAX_REGEX_BYTES: usize = 1 << 20;

fn compile_regex(values: &[String]) -> Result<regex::Regex, String> {
    let pattern = values
        .iter()
        .map(|v| format!("(?:{v})"))
        .collect::<Vec<_>>()
        .join("|");
    regex::RegexBuilder::new(&pattern)
        .case_insensitive(true)
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| format!("invalid regular expression in the prefilter: {e}"))
}

impl Prefilter {
    /// Compiles a prefilter from clauses. No clauses: every event matches.
    /// A regex clause that does not compile matches nothing; use
    /// [`Prefilter::compile`] to get the error instead.
    pub fn new(clauses: Vec<Clause>) -> Self {
        Self::build(clauses, false).unwrap_or_default()
    }

    /// As [`Prefilter::new`], failing on a regular expression that does not
    /// compile (or compiles too large), with the reason.
    pub fn compile(clauses: Vec<Clause>) -> Result<Self, String> {
        Self::build(clauses, true)
    }

    /// A prefilter of `clauses` (all must hold) and `any_of` groups (in
    /// each, one clause must hold; an empty group matches nothing), failing
    /// on a regular expression that does not compile.
    pub fn compile_with_groups(
        clauses: Vec<Clause>,
        any_of: Vec<Vec<Clause>>,
    ) -> Result<Self, String> {
        let mut prefilter = Self::build(clauses, true)?;
        for group in any_of {
            prefilter.any_of.push(Self::build(group, true)?.clauses);
        }
        Ok(prefilter)
    }

    fn build(clauses: Vec<Clause>, strict: bool) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(clauses.len());
        for clause in clauses {
            let regex = match clause.op {
                MatchOp::Regex if !clause.values.is_empty() => {
                    match compile_regex(&clause.values) {
                        Ok(regex) => Some(regex),
                        Err(e) if strict => return Err(format!("field `{}`: {e}", clause.field)),
                        Err(_) => None,
                    }
                }
                _ => None,
            };
            compiled.push(CompiledClause {
                field: clause.field,
                op: clause.op,
                needles: clause
                    .values
                    .into_iter()
                    .map(|mut v| {
                        v.make_ascii_lowercase();
                        v
                    })
                    .collect(),
                regex,
            });
        }
        Ok(Self {
            clauses: compiled,
            any_of: Vec::new(),
        })
    }

    /// A prefilter that lets every event through.
    pub fn match_all() -> Self {
        Self::default()
    }

    /// True when there are no clauses or groups (every event matches).
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty() && self.any_of.is_empty()
    }

    /// Number of clauses and groups.
    pub fn len(&self) -> usize {
        self.clauses.len() + self.any_of.len()
    }

    /// Whether `doc` passes every clause.
    ///
    /// A missing or `null` field fails every clause on it. When the field is
    /// an array, the clause holds if any element matches (as Sigma treats
    /// list-valued fields); objects compare by their compact JSON text.
    pub fn matches(&self, doc: &Value) -> bool {
        self.clauses.iter().all(|clause| clause.matches(doc))
            && self
                .any_of
                .iter()
                .all(|group| group.iter().any(|clause| clause.matches(doc)))
    }
}

impl Prefilter {
    /// Narrows `rows` (one flag per event of `block`) to the events that
    /// pass, deciding exactly as [`Prefilter::matches`] on each whole event
    /// but reading only the clauses' columns, and a dictionary-encoded
    /// string once per distinct value.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] when a column is damaged.
    pub fn retain_columns(
        &self,
        block: &ColumnBlock<'_>,
        rows: &mut [bool],
    ) -> Result<(), BlockError> {
        for clause in &self.clauses {
            if !rows.contains(&true) {
                return Ok(());
            }
            let mut hits = vec![false; rows.len()];
            clause.mark(block, rows, &mut hits)?;
            rows.copy_from_slice(&hits);
        }
        for group in &self.any_of {
            let mut passed = vec![false; rows.len()];
            for clause in group {
                let open: Vec<bool> = rows.iter().zip(&passed).map(|(r, p)| *r && !*p).collect();
                if !open.contains(&true) {
                    break;
                }
                clause.mark(block, &open, &mut passed)?;
            }
            for (row, passed) in rows.iter_mut().zip(passed) {
                *row &= passed;
            }
        }
        Ok(())
    }
}

impl From<Vec<Clause>> for Prefilter {
    fn from(clauses: Vec<Clause>) -> Self {
        Self::new(clauses)
    }
}

impl CompiledClause {
    fn matches(&self, doc: &Value) -> bool {
        let Some(value) = lookup(doc, &self.field) else {
            return false;
        };
        if self.op == MatchOp::Exists {
            return is_present(value);
        }
        match value {
            Value::Array(items) => items.iter().any(|item| self.matches_scalar(item)),
            _ => self.matches_scalar(value),
        }
    }

    /// Sets `hits[row]` for each event `rows` selects whose value passes.
    fn mark(
        &self,
        block: &ColumnBlock<'_>,
        rows: &[bool],
        hits: &mut [bool],
    ) -> Result<(), BlockError> {
        // Per dictionary code: 0 not decided yet, 1 fails, 2 passes.
        let mut decided: Vec<u8> = Vec::new();
        block.for_each_found(&self.field, rows, |row, found, code| {
            let pass = match code.map(|c| c as usize) {
                Some(code) => {
                    if decided.len() <= code {
                        decided.resize(code + 1, 0);
                    }
                    if decided[code] == 0 {
                        decided[code] = 1 + u8::from(self.matches_found(found));
                    }
                    decided[code] == 2
                }
                None => self.matches_found(found),
            };
            if pass && let Some(hit) = hits.get_mut(row) {
                *hit = true;
            }
        })
    }

    /// As [`CompiledClause::matches`] on the value lookup found.
    fn matches_found(&self, found: Found<'_>) -> bool {
        match found {
            Found::Text(text) => match self.op {
                MatchOp::Exists => !text.is_empty(),
                MatchOp::Regex => self
                    .regex
                    .as_ref()
                    .is_some_and(|regex| regex.is_match(text)),
                op => text_matches(op, text, &self.needles),
            },
            Found::Value(value) if self.op == MatchOp::Exists => is_present(value),
            Found::Value(Value::Array(items)) => items.iter().any(|item| self.matches_scalar(item)),
            Found::Value(value) => self.matches_scalar(value),
        }
    }

    fn matches_scalar(&self, value: &Value) -> bool {
        match value_text(value) {
            Some(text) if self.op == MatchOp::Regex => self
                .regex
                .as_ref()
                .is_some_and(|regex| regex.is_match(&text)),
            Some(text) => text_matches(self.op, &text, &self.needles),
            None => false,
        }
    }
}

/// Present and non-empty: not null, not `""`, not `[]`, not `{}`.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// `needles` are already ASCII-lowercased.
fn text_matches(op: MatchOp, hay: &str, needles: &[String]) -> bool {
    let hay_bytes = hay.as_bytes();
    match op {
        MatchOp::Equals => needles.iter().any(|n| hay.eq_ignore_ascii_case(n)),
        MatchOp::StartsWith => needles.iter().any(|n| {
            hay_bytes
                .get(..n.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(n.as_bytes()))
        }),
        MatchOp::EndsWith => needles.iter().any(|n| {
            hay_bytes
                .len()
                .checked_sub(n.len())
                .and_then(|start| hay_bytes.get(start..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(n.as_bytes()))
        }),
        MatchOp::Contains => {
            if needles.is_empty() {
                return false;
            }
            // Lowercase the field once per clause, then use the standard
            // substring search, rather than a hand-rolled case-folding scan.
            let lowered: Cow<'_, str> = if hay_bytes.iter().any(u8::is_ascii_uppercase) {
                Cow::Owned(hay.to_ascii_lowercase())
            } else {
                Cow::Borrowed(hay)
            };
            needles.iter().any(|n| lowered.contains(n.as_str()))
        }
        MatchOp::Exists => true,
        // Compiled clauses match regexes before reaching here.
        MatchOp::Regex => false,
    }
}

/// Projects an event onto a module's declared fields: one entry per field, in
/// order, holding the field's text ([`value_text`]) or `None` when the event
/// does not have it.
///
/// The pseudo-field [`ALL_VALUES_FIELD`] (`@values`) holds every value of
/// the event, one per line ([`all_values_text`]).
pub fn project(doc: &Value, fields: &[String]) -> Vec<Option<String>> {
    fields
        .iter()
        .map(|field| {
            if field == ALL_VALUES_FIELD {
                return all_values_text(doc);
            }
            lookup(doc, field).and_then(value_text).map(Cow::into_owned)
        })
        .collect()
}

/// A module's declared fields, ready to project events onto: a field
/// declared more than once is looked up once per event, and its value
/// copied to each position it was declared at.
///
/// A plain top-level name (no dot, not `@values`) resolves to the event's
/// member of that name and nothing else ([`lookup`]), so when a module
/// declares more such names than the event has members (a rule engine
/// declaring hundreds), the event's members are walked once and matched by
/// hash instead of looking every declared name up.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// Each distinct field, in first-declared order.
    unique: Vec<String>,
    /// For each declared field, its index in `unique`; `None` when no field
    /// repeats (the projection is then `unique` itself).
    slots: Option<Vec<usize>>,
    /// The plain top-level names among `unique`, by their index there.
    plain: std::collections::HashMap<String, usize>,
    /// The other names' indexes in `unique` (dotted paths, EVTX paths,
    /// `@values`), looked up one by one.
    other: Vec<usize>,
}

impl Projection {
    /// The projection onto `fields`, in declaration order.
    pub fn new(fields: &[String]) -> Self {
        let mut unique: Vec<String> = Vec::with_capacity(fields.len());
        let mut index = std::collections::HashMap::with_capacity(fields.len());
        let slots: Vec<usize> = fields
            .iter()
            .map(|field| {
                *index.entry(field.as_str()).or_insert_with(|| {
                    unique.push(field.clone());
                    unique.len() - 1
                })
            })
            .collect();
        let repeats = unique.len() < fields.len();
        let mut plain = std::collections::HashMap::new();
        let mut other = Vec::new();
        for (i, name) in unique.iter().enumerate() {
            if name.contains('.') || name == ALL_VALUES_FIELD || name.is_empty() {
                other.push(i);
            } else {
                plain.insert(name.clone(), i);
            }
        }
        Self {
            unique,
            slots: repeats.then_some(slots),
            plain,
            other,
        }
    }

    /// `doc`'s values, one per distinct field.
    fn project_unique(&self, doc: &Value) -> Vec<Option<String>> {
        let Value::Object(members) = doc else {
            return project(doc, &self.unique);
        };
        if self.plain.len() <= members.len() {
            return project(doc, &self.unique);
        }
        let mut values = vec![None; self.unique.len()];
        for (key, value) in members {
            if let Some(&i) = self.plain.get(key.as_str()) {
                values[i] = value_text(value).map(Cow::into_owned);
            }
        }
        for &i in &self.other {
            let field = &self.unique[i];
            values[i] = if field == ALL_VALUES_FIELD {
                all_values_text(doc)
            } else {
                lookup(doc, field).and_then(value_text).map(Cow::into_owned)
            };
        }
        values
    }

    /// Distinct fields looked up per event.
    pub fn distinct_fields(&self) -> usize {
        self.unique.len()
    }

    /// `doc`'s values, one per declared field (as [`project`]).
    pub fn project(&self, doc: &Value) -> Vec<Option<String>> {
        self.to_declared(self.project_unique(doc))
    }

    /// The values of the events `rows` selects in `block`, one per declared
    /// field, as [`Projection::project`] gives them on each whole event;
    /// only the columns the fields reach are decompressed.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] when a column is damaged.
    pub fn project_columns(
        &self,
        block: &ColumnBlock<'_>,
        rows: &[bool],
    ) -> Result<Vec<Vec<Option<String>>>, BlockError> {
        Ok(block
            .project_rows(&self.unique, Some(rows))?
            .into_iter()
            .map(|values| self.to_declared(values))
            .collect())
    }

    /// As [`Projection::project_columns`], by column: one
    /// [`FieldTexts`] per declared field.
    ///
    /// # Errors
    /// [`BlockError::Invalid`] when a column is damaged.
    pub fn project_texts(
        &self,
        block: &ColumnBlock<'_>,
        rows: &[bool],
    ) -> Result<Vec<FieldTexts>, BlockError> {
        Ok(self.to_declared(block.project_texts(&self.unique, rows)?))
    }

    /// Declared fields.
    pub fn len(&self) -> usize {
        self.slots.as_ref().map_or(self.unique.len(), Vec::len)
    }

    /// Whether no field is declared.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One value per distinct field to one per declared field.
    /// (`T::default()`, none, for a slot out of range).
    fn to_declared<T: Clone + Default>(&self, values: Vec<T>) -> Vec<T> {
        match &self.slots {
            None => values,
            Some(slots) => slots
                .iter()
                .map(|&slot| values.get(slot).cloned().unwrap_or_default())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed_logon() -> Value {
        json!({
            "EventID": 4625,
            "Channel": "Security",
            "TargetUserName": "SVC_Backup",
            "IpAddress": "203.0.113.66",
            "LogonType": "3",
            "ProcessName": "C:\\Windows\\System32\\LSASS.exe",
            "Empty": "",
            "Nothing": null,
            "tags": ["mordorDataset", "Brute"],
            "userIdentity": {"userName": "pedro"},
        })
    }

    fn one(field: &str, op: MatchOp, values: &[&str]) -> Prefilter {
        Prefilter::new(vec![Clause::new(field, op, values.iter().copied())])
    }

    #[test]
    fn empty_prefilter_matches_everything() {
        let pf = Prefilter::new(Vec::new());
        assert!(pf.is_empty());
        assert!(pf.matches(&failed_logon()));
        assert!(pf.matches(&json!({})));
        assert!(Prefilter::match_all().matches(&json!(null)));
    }

    #[test]
    fn equals_compares_text_forms_case_insensitively() {
        let doc = failed_logon();
        assert!(one("EventID", MatchOp::Equals, &["4625"]).matches(&doc));
        assert!(one("EventID", MatchOp::Equals, &["4624", "4625"]).matches(&doc));
        assert!(!one("EventID", MatchOp::Equals, &["4624"]).matches(&doc));
        assert!(one("TargetUserName", MatchOp::Equals, &["svc_backup"]).matches(&doc));
        assert!(one("TargetUserName", MatchOp::Equals, &["SVC_BACKUP"]).matches(&doc));
        assert!(!one("TargetUserName", MatchOp::Equals, &["svc_backu"]).matches(&doc));
        assert!(one("LogonType", MatchOp::Equals, &["3"]).matches(&doc));
        assert!(one("userIdentity.userName", MatchOp::Equals, &["PEDRO"]).matches(&doc));
    }

    #[test]
    fn contains_starts_with_and_ends_with() {
        let doc = failed_logon();
        assert!(one("ProcessName", MatchOp::Contains, &["system32\\lsass"]).matches(&doc));
        assert!(one("ProcessName", MatchOp::Contains, &["nope", "LSASS.EXE"]).matches(&doc));
        assert!(!one("ProcessName", MatchOp::Contains, &["cmd.exe"]).matches(&doc));
        assert!(one("ProcessName", MatchOp::StartsWith, &["c:\\windows"]).matches(&doc));
        assert!(!one("ProcessName", MatchOp::StartsWith, &["\\windows"]).matches(&doc));
        assert!(one("ProcessName", MatchOp::EndsWith, &["\\lsass.EXE"]).matches(&doc));
        assert!(!one("ProcessName", MatchOp::EndsWith, &["lsass"]).matches(&doc));
        assert!(one("IpAddress", MatchOp::StartsWith, &["203.0.113."]).matches(&doc));
        // Needles longer than the field never match and never panic.
        assert!(!one("LogonType", MatchOp::EndsWith, &["a much longer needle"]).matches(&doc));
        assert!(!one("LogonType", MatchOp::StartsWith, &["a much longer needle"]).matches(&doc));
    }

    #[test]
    fn case_folding_is_ascii_only_and_safe_on_multibyte_text() {
        let doc = json!({"User": "JÖRG", "Path": "C:\\Users\\ÄÖ\\x"});
        // ASCII letters fold, non-ASCII letters compare exactly.
        assert!(one("User", MatchOp::Equals, &["jÖrg"]).matches(&doc));
        assert!(!one("User", MatchOp::Equals, &["jörg"]).matches(&doc));
        // Byte-wise prefix/suffix checks must not split a UTF-8 character.
        assert!(!one("User", MatchOp::StartsWith, &["j\u{00d6}r\u{00e9}"]).matches(&doc));
        assert!(one("Path", MatchOp::EndsWith, &["\\ÄÖ\\X"]).matches(&doc));
        assert!(one("Path", MatchOp::Contains, &["users\\ÄÖ"]).matches(&doc));
    }

    #[test]
    fn exists_requires_a_present_non_empty_value() {
        let doc = failed_logon();
        assert!(one("TargetUserName", MatchOp::Exists, &[]).matches(&doc));
        assert!(one("EventID", MatchOp::Exists, &["ignored"]).matches(&doc));
        assert!(!one("Empty", MatchOp::Exists, &[]).matches(&doc));
        assert!(!one("Nothing", MatchOp::Exists, &[]).matches(&doc));
        assert!(!one("Missing", MatchOp::Exists, &[]).matches(&doc));
        assert!(one("tags", MatchOp::Exists, &[]).matches(&doc));
        assert!(!one("list", MatchOp::Exists, &[]).matches(&json!({"list": []})));
    }

    #[test]
    fn missing_null_and_valueless_clauses_do_not_match() {
        let doc = failed_logon();
        assert!(!one("Missing", MatchOp::Equals, &["x"]).matches(&doc));
        assert!(!one("Nothing", MatchOp::Equals, &["null"]).matches(&doc));
        assert!(!one("EventID", MatchOp::Equals, &[]).matches(&doc));
        assert!(!one("EventID", MatchOp::Contains, &[]).matches(&doc));
    }

    #[test]
    fn array_fields_match_when_any_element_matches() {
        let doc = failed_logon();
        assert!(one("tags", MatchOp::Equals, &["brute"]).matches(&doc));
        assert!(one("tags", MatchOp::StartsWith, &["mordor"]).matches(&doc));
        assert!(!one("tags", MatchOp::Equals, &["other"]).matches(&doc));
    }

    #[test]
    fn clauses_are_anded() {
        let doc = failed_logon();
        let both = Prefilter::new(vec![
            Clause::new("EventID", MatchOp::Equals, ["4624", "4625"]),
            Clause::new("Channel", MatchOp::Equals, ["security"]),
        ]);
        assert_eq!(both.len(), 2);
        assert!(both.matches(&doc));
        let one_fails = Prefilter::from(vec![
            Clause::new("EventID", MatchOp::Equals, ["4625"]),
            Clause::new("Channel", MatchOp::Equals, ["sysmon"]),
        ]);
        assert!(!one_fails.matches(&doc));
    }

    #[test]
    fn any_of_groups_need_one_clause_each_and_are_anded_with_the_clauses() {
        let sysmon_connection = json!({"EventID": 3, "DestinationIp": "10.0.0.9"});
        let zeek_connection = json!({"id.resp_h": "10.0.0.9", "proto": "tcp"});
        let process = json!({"EventID": 1, "Image": "C:\\x.exe"});
        let prefilter = Prefilter::compile_with_groups(
            vec![],
            vec![vec![
                Clause::new("EventID", MatchOp::Equals, ["3"]),
                Clause::new("id.resp_h", MatchOp::Exists, Vec::<String>::new()),
            ]],
        )
        .unwrap();
        assert!(prefilter.matches(&sysmon_connection));
        assert!(prefilter.matches(&zeek_connection));
        assert!(!prefilter.matches(&process));
        assert_eq!(prefilter.len(), 1);
        assert!(!prefilter.is_empty());

        let with_clause = Prefilter::compile_with_groups(
            vec![Clause::new("proto", MatchOp::Equals, ["tcp"])],
            vec![vec![Clause::new(
                "id.resp_h",
                MatchOp::Exists,
                Vec::<String>::new(),
            )]],
        )
        .unwrap();
        assert!(with_clause.matches(&zeek_connection));
        assert!(
            !with_clause.matches(&sysmon_connection),
            "the plain clause must hold too"
        );

        let empty_group = Prefilter::compile_with_groups(vec![], vec![vec![]]).unwrap();
        assert!(
            !empty_group.matches(&zeek_connection),
            "an empty group matches nothing"
        );
        let bad = Prefilter::compile_with_groups(
            vec![],
            vec![vec![Clause::new("x", MatchOp::Regex, ["("])]],
        );
        assert!(bad.unwrap_err().contains("invalid regular expression"));
    }

    #[test]
    fn a_projection_wider_than_the_event_walks_its_members_and_gives_the_same_values() {
        let doc = json!({
            "EventID": 4625,
            "TargetUserName": "svc",
            "IpAddress": null,
            "Event": {"EventData": {"SubjectUserName": "nested"}},
            "id.orig_h": "10.0.0.1",
            "flag": true,
            "list": ["a", "b"],
        });
        let mut fields: Vec<String> = (0..50).map(|i| format!("Absent{i}")).collect();
        fields.extend(
            [
                "EventID",
                "TargetUserName",
                "IpAddress",
                "Event.EventData.SubjectUserName",
                "EventData.SubjectUserName",
                "id.orig_h",
                "flag",
                "list",
                "@values",
                "EventID",
            ]
            .map(str::to_owned),
        );
        let projection = Projection::new(&fields);
        assert!(projection.plain.len() > 7, "the member walk is taken");
        let projected = projection.project(&doc);
        assert_eq!(projected, project(&doc, &fields));
        assert_eq!(projected[50].as_deref(), Some("4625"));
        assert_eq!(projected[53].as_deref(), Some("nested"));
        assert_eq!(projected[57].as_deref(), Some(r#"["a","b"]"#));
        // Not an object: every name is looked up as before.
        assert_eq!(
            projection.project(&json!([1, 2])),
            project(&json!([1, 2]), &fields)
        );
    }

    #[test]
    fn projection_looks_up_a_repeated_field_once_and_fills_every_position() {
        let fields: Vec<String> = ["EventID", "TargetUserName", "EventID", "Missing", "EventID"]
            .iter()
            .map(|f| f.to_string())
            .collect();
        let projection = Projection::new(&fields);
        assert_eq!(projection.distinct_fields(), 3);
        let doc = failed_logon();
        assert_eq!(projection.project(&doc), project(&doc, &fields));
        let distinct = Projection::new(&fields[..2]);
        assert_eq!(distinct.distinct_fields(), 2);
        assert_eq!(distinct.project(&doc), project(&doc, &fields[..2]));
    }

    #[test]
    fn project_returns_text_per_declared_field() {
        let doc = failed_logon();
        let fields: Vec<String> = ["EventID", "TargetUserName", "Missing", "Nothing", "tags"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            project(&doc, &fields),
            vec![
                Some("4625".to_owned()),
                Some("SVC_Backup".to_owned()),
                None,
                None,
                Some(r#"["mordorDataset","Brute"]"#.to_owned()),
            ]
        );
        assert!(project(&doc, &[]).is_empty());
    }
}

#[cfg(test)]
mod regex_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn regex_clauses_match_case_insensitively_and_bad_patterns_are_named() {
        let clause = Clause::new(
            "CommandLine",
            MatchOp::Regex,
            [r"comsvcs(\.dll)?[, ]+#?24", "minidump"],
        );
        let prefilter = Prefilter::compile(vec![clause]).expect("valid patterns");
        assert!(prefilter.matches(&json!({"CommandLine": "rundll32 C:\\Windows\\System32\\COMSVCS.dll, #24 640 out.dmp full"})));
        assert!(prefilter.matches(&json!({"CommandLine": "procdump -ma lsass MiniDump"})));
        assert!(!prefilter.matches(&json!({"CommandLine": "notepad.exe"})));
        assert!(!prefilter.matches(&json!({"Image": "x"})));
        let err = Prefilter::compile(vec![Clause::new(
            "CommandLine",
            MatchOp::Regex,
            ["(unclosed"],
        )])
        .expect_err("bad pattern");
        assert!(
            err.contains("CommandLine") && err.contains("regular expression"),
            "{err}"
        );
        // The lenient constructor never matches with a bad pattern.
        let lenient = Prefilter::new(vec![Clause::new(
            "CommandLine",
            MatchOp::Regex,
            ["(unclosed"],
        )]);
        assert!(!lenient.matches(&json!({"CommandLine": "(unclosed"})));
    }
}
