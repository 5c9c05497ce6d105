//! Compiled value tests: one Sigma detection value with its modifiers.
//!
//! A detection item `Field|mod1|mod2: value` becomes a [`ValueTest`]. String
//! values go through Sigma's wildcard syntax (`*`, `?`, `\` escapes), then
//! the transformation modifiers (`windash`, `utf16le`/`utf16be`/`wide`,
//! `base64`, `base64offset`), then the comparison (`contains`, `startswith`,
//! `endswith`, or whole-value equality). The result is the cheapest matcher
//! that implements it: an equality, prefix, suffix or substring test on the
//! lowercased value where possible, a regular expression otherwise.
//!
//! Matching is case-insensitive (Unicode lowercase) unless the `cased`
//! modifier is given. Values produced by `base64`/`base64offset` are always
//! compared case-sensitively: base64 text is case-sensitive, and comparing it
//! without case only adds false positives.

use std::net::IpAddr;

use base64::Engine as _;
use quarry_sdk::contract::intel;
use regex::{Regex, RegexBuilder};

use crate::rule::RuleError;

/// Largest compiled regular expression one value may produce.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Largest number of literal variants a value may expand to (`windash`
/// combinations); above that the alternatives become a regex class.
const MAX_VARIANTS: usize = 64;

/// One piece of a Sigma string after wildcard parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Lit(String),
    /// `*`: any run of characters, possibly empty.
    Star,
    /// `?`: exactly one character.
    One,
    /// One character out of a set (made by `windash`).
    Class(Vec<char>),
}

/// Replaces the `%name%` placeholders of `text` with every combination of
/// the values `placeholders` gives them (Sigma's `expand` modifier).
/// A placeholder without values is an error naming the parameter to pass.
pub fn expand_placeholders(
    text: &str,
    placeholders: &std::collections::HashMap<String, Vec<String>>,
) -> Result<Vec<String>, RuleError> {
    let mut results = vec![String::new()];
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let Some(len) = rest[start + 1..].find('%') else {
            break;
        };
        let name = &rest[start + 1..start + 1 + len];
        let values = placeholders.get(name).ok_or_else(|| {
            RuleError::Unsupported(format!(
                "placeholder `%{name}%` has no values (pass the parameter `placeholder.{name}`)"
            ))
        })?;
        let prefix = &rest[..start];
        results = results
            .iter()
            .flat_map(|r| values.iter().map(move |v| format!("{r}{prefix}{v}")))
            .take(MAX_VARIANTS)
            .collect();
        rest = &rest[start + len + 2..];
    }
    for r in &mut results {
        r.push_str(rest);
    }
    Ok(results)
}

/// Parses Sigma's wildcard syntax: `*` and `?` are wildcards; a backslash
/// escapes a following `*`, `?` or backslash and is literal before anything
/// else (so `C:\Windows\` needs no escaping).
pub fn parse_wildcards(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    lit.push(next);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                let piece = if c == '*' { Piece::Star } else { Piece::One };
                // `**` is the same as `*`.
                if !(piece == Piece::Star && pieces.last() == Some(&Piece::Star)) {
                    pieces.push(piece);
                }
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    pieces
}

/// How a plain string is compared with a field value.
#[derive(Clone, Debug)]
enum StrOp {
    Equals(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    Regex(Regex),
}

/// A compiled string comparison.
#[derive(Clone, Debug)]
pub struct StrMatcher {
    op: StrOp,
    /// Compare with the original value instead of the lowercased one.
    cased: bool,
}

impl StrMatcher {
    /// Compiles wildcard pieces (already wrapped in `*` for contains and
    /// friends) into the cheapest matcher.
    pub fn compile(pieces: &[Piece], cased: bool) -> Result<Self, RuleError> {
        StrMatcher::compile_in(pieces, cased, false)
    }

    /// As [`StrMatcher::compile`]; with `lines`, the subject holds one
    /// value per line and the pieces must match one whole line (a
    /// substring test stays one: a keyword has no line break).
    pub fn compile_in(pieces: &[Piece], cased: bool, lines: bool) -> Result<Self, RuleError> {
        let norm = |s: &str| {
            if cased {
                s.to_owned()
            } else {
                s.to_lowercase()
            }
        };
        let plain_substring =
            matches!(pieces, [Piece::Star, Piece::Lit(s), Piece::Star] if !s.contains('\n'));
        let op = match pieces {
            _ if lines && !plain_substring => {
                StrOp::Regex(build_regex(&anchored_pattern(pieces), !cased, true, false)?)
            }
            [] => StrOp::Equals(String::new()),
            [Piece::Star] => StrOp::StartsWith(String::new()),
            [Piece::Lit(s)] => StrOp::Equals(norm(s)),
            [Piece::Lit(s), Piece::Star] => StrOp::StartsWith(norm(s)),
            [Piece::Star, Piece::Lit(s)] => StrOp::EndsWith(norm(s)),
            [Piece::Star, Piece::Lit(s), Piece::Star] => StrOp::Contains(norm(s)),
            _ => StrOp::Regex(build_regex(&anchored_pattern(pieces), !cased, false, true)?),
        };
        Ok(StrMatcher { op, cased })
    }

    /// Whether the value matches; `lower` is `value.to_lowercase()`.
    pub fn matches(&self, value: &str, lower: &str) -> bool {
        let subject = if self.cased { value } else { lower };
        match &self.op {
            StrOp::Equals(s) => subject == s,
            StrOp::StartsWith(s) => subject.starts_with(s.as_str()),
            StrOp::EndsWith(s) => subject.ends_with(s.as_str()),
            StrOp::Contains(s) => subject.contains(s.as_str()),
            StrOp::Regex(re) => re.is_match(value),
        }
    }

    /// The literal text a value must contain, if the matcher is a plain
    /// literal comparison (used for evidence and tests).
    pub fn literal(&self) -> Option<&str> {
        match &self.op {
            StrOp::Equals(s) | StrOp::StartsWith(s) | StrOp::EndsWith(s) | StrOp::Contains(s) => {
                Some(s)
            }
            StrOp::Regex(_) => None,
        }
    }
}

/// The regex of wildcard `pieces`, anchored at both ends.
fn anchored_pattern(pieces: &[Piece]) -> String {
    let mut pattern = String::from("^");
    for piece in pieces {
        match piece {
            Piece::Lit(s) => pattern.push_str(&regex::escape(s)),
            Piece::Star => pattern.push_str(".*"),
            Piece::One => pattern.push('.'),
            Piece::Class(chars) => {
                pattern.push_str("(?:");
                let alternatives: Vec<String> = chars
                    .iter()
                    .map(|c| regex::escape(&c.to_string()))
                    .collect();
                pattern.push_str(&alternatives.join("|"));
                pattern.push(')');
            }
        }
    }
    pattern.push('$');
    pattern
}

fn build_regex(
    pattern: &str,
    case_insensitive: bool,
    multi_line: bool,
    dot_all: bool,
) -> Result<Regex, RuleError> {
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .multi_line(multi_line)
        .dot_matches_new_line(dot_all)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| RuleError::InvalidRegex {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })
}

/// Most literals a [`LiteralSet`] takes.
const MAX_SET_LITERALS: usize = 1 << 20;

/// A regex that is only an alternation of literals (`(?i)(evil\.com|bad\.org|…)`),
/// as an unanchored multi-literal search. The regex engine refuses such a
/// pattern once its compiled form outgrows its size budget (a rule listing
/// thousands of indicators); Aho-Corasick matches the same set in time
/// linear in the value, with memory linear in the literals.
#[derive(Clone, Debug)]
pub struct LiteralSet {
    automaton: aho_corasick::AhoCorasick,
    /// Compare with the lowercased value (the literals are lowercased).
    case_insensitive: bool,
    literals: usize,
}

impl LiteralSet {
    /// The set `pattern` is, if it is one: optional flags, then an
    /// alternation of plain literals, possibly inside one group. Anchors,
    /// classes, repetitions or any other syntax: `None` (the pattern is a
    /// real regex). `case_insensitive` is the `re|i` modifier; a `(?i)` flag
    /// has the same effect.
    pub fn from_pattern(pattern: &str, case_insensitive: bool) -> Option<LiteralSet> {
        use regex_syntax::ast::Ast;
        let ast = regex_syntax::ast::parse::Parser::new()
            .parse(pattern)
            .ok()?;
        let mut case_insensitive = case_insensitive;
        let mut node = &ast;
        loop {
            match node {
                Ast::Concat(concat) => {
                    let mut rest = concat.asts.iter().filter(|item| match item {
                        Ast::Flags(set) => {
                            case_insensitive |= flags_ask_case_insensitive(&set.flags);
                            false
                        }
                        _ => true,
                    });
                    let (Some(only), None) = (rest.next(), rest.next()) else {
                        return None;
                    };
                    node = only;
                }
                Ast::Group(group) => {
                    if let regex_syntax::ast::GroupKind::NonCapturing(flags) = &group.kind {
                        case_insensitive |= flags_ask_case_insensitive(flags);
                    }
                    node = &group.ast;
                }
                Ast::Alternation(alternation) => {
                    let mut literals = Vec::with_capacity(alternation.asts.len());
                    for branch in &alternation.asts {
                        let literal = literal_text(branch)?;
                        if literal.is_empty() {
                            // An empty branch matches everywhere.
                            return None;
                        }
                        literals.push(if case_insensitive {
                            literal.to_lowercase()
                        } else {
                            literal
                        });
                    }
                    if literals.len() > MAX_SET_LITERALS {
                        return None;
                    }
                    let automaton = aho_corasick::AhoCorasick::new(&literals).ok()?;
                    return Some(LiteralSet {
                        automaton,
                        case_insensitive,
                        literals: literals.len(),
                    });
                }
                _ => return None,
            }
        }
    }

    /// Whether `value` (with `lower` its lowercase form) contains one of the
    /// literals.
    pub fn is_match(&self, value: &str, lower: &str) -> bool {
        self.automaton
            .is_match(if self.case_insensitive { lower } else { value })
    }

    /// Number of literals.
    pub fn len(&self) -> usize {
        self.literals
    }

    /// Whether the set is empty (never: an alternation has branches).
    pub fn is_empty(&self) -> bool {
        self.literals == 0
    }
}

/// Whether `flags` turn case-insensitivity on (`(?i)`, not `(?-i)`).
fn flags_ask_case_insensitive(flags: &regex_syntax::ast::Flags) -> bool {
    use regex_syntax::ast::{Flag, FlagsItemKind};
    let mut negated = false;
    let mut on = false;
    for item in &flags.items {
        match &item.kind {
            FlagsItemKind::Negation => negated = true,
            FlagsItemKind::Flag(Flag::CaseInsensitive) => on = !negated,
            FlagsItemKind::Flag(_) => {}
        }
    }
    on
}

/// The text of a branch made only of literal characters.
fn literal_text(ast: &regex_syntax::ast::Ast) -> Option<String> {
    use regex_syntax::ast::Ast;
    match ast {
        Ast::Literal(literal) => Some(literal.c.to_string()),
        Ast::Concat(concat) => concat
            .asts
            .iter()
            .map(|item| match item {
                Ast::Literal(literal) => Some(literal.c),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Comparison of a numeric field with a number (`lt`, `lte`, `gt`, `gte`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumOp {
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
}

/// An IPv4 or IPv6 network (`cidr` modifier). Parsed and tested by the
/// functions intel sets use for their ranges (`quarry_contract::intel`), so
/// a rule's `cidr` value and an intel range cover the same addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `v6::/n` (a bare address is a host network).
    pub fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        let (network, prefix) = match intel::cidr(text) {
            Some(range) => range,
            None if !text.contains('/') => {
                let address: IpAddr = text.parse().ok()?;
                (address, if address.is_ipv4() { 32 } else { 128 })
            }
            None => return None,
        };
        Some(Cidr { network, prefix })
    }

    /// Whether `addr` lies in the network. An IPv4-mapped IPv6 address is
    /// in an IPv4 network that holds its IPv4 address, and in the IPv6
    /// networks that hold it as written (`::ffff:0:0/96`).
    pub fn contains(&self, addr: IpAddr) -> bool {
        intel::in_range(addr, (self.network, self.prefix))
    }
}

/// A compiled test of one detection value against one field value.
#[derive(Clone, Debug)]
pub enum ValueTest {
    /// Any of these string matchers (a value expanded into variants by
    /// `base64offset`, `windash`, ...).
    Str(Vec<StrMatcher>),
    /// A Sigma `re` value (case-sensitive unless `re|i`).
    Regex(Regex),
    /// A Sigma `re` value that is only an alternation of literals and too
    /// big for the regex engine's budget, as a literal set.
    Literals(LiteralSet),
    /// `cidr`: the field is an IP address inside the network.
    Cidr(Cidr),
    /// `lt`/`lte`/`gt`/`gte`: the field is a number compared with this one.
    Num(NumOp, f64),
    /// `exists`: whether the field is present (and not empty).
    Exists(bool),
    /// `null`: the field is absent or empty.
    Null,
    /// Any of these tests (a value expanded by `expand` into several).
    AnyOf(Vec<ValueTest>),
    /// `fieldref`: equal (ignoring case unless cased) to the named field,
    /// resolved to its index.
    FieldRef {
        /// Index of the other field.
        field: usize,
        /// Compare case-sensitively.
        cased: bool,
    },
}

/// What a value test sees of the event: the value of the tested field (if
/// any), its lowercase form, and access to other fields for `fieldref`.
pub trait FieldSource {
    /// Value and lowercased value of field `index`.
    fn value(&self, index: usize) -> Option<(&str, &str)>;
}

impl ValueTest {
    /// Tests `value` (with `lower` its lowercase) of the event `event`.
    pub fn matches(&self, value: Option<(&str, &str)>, event: &dyn FieldSource) -> bool {
        match self {
            ValueTest::Exists(want) => value.is_some_and(|(v, _)| !v.is_empty()) == *want,
            ValueTest::Null => value.is_none_or(|(v, _)| v.is_empty()),
            ValueTest::AnyOf(tests) => tests.iter().any(|t| t.matches(value, event)),
            ValueTest::FieldRef { field, cased } => match (value, event.value(*field)) {
                (Some((v, l)), Some((ov, ol))) => {
                    if *cased {
                        v == ov
                    } else {
                        l == ol
                    }
                }
                _ => false,
            },
            _ => {
                let Some((value, lower)) = value else {
                    return false;
                };
                match self {
                    ValueTest::Str(matchers) => matchers.iter().any(|m| m.matches(value, lower)),
                    ValueTest::Regex(re) => re.is_match(value),
                    ValueTest::Literals(set) => set.is_match(value, lower),
                    ValueTest::Cidr(net) => value
                        .trim()
                        .parse::<IpAddr>()
                        .is_ok_and(|addr| net.contains(addr)),
                    ValueTest::Num(op, n) => parse_number(value).is_some_and(|v| match op {
                        NumOp::Lt => v < *n,
                        NumOp::Lte => v <= *n,
                        NumOp::Gt => v > *n,
                        NumOp::Gte => v >= *n,
                    }),
                    ValueTest::Exists(_)
                    | ValueTest::Null
                    | ValueTest::AnyOf(_)
                    | ValueTest::FieldRef { .. } => {
                        unreachable!("handled above")
                    }
                }
            }
        }
    }
}

impl ValueTest {
    /// Lowercase literals one of which the lowercased value contains
    /// whenever this test matches; `None` when no such set is known (a
    /// regex, a number, a presence test). Only ASCII literals: Unicode
    /// lowercasing is context-dependent (a final sigma), so a non-ASCII
    /// substring of a value need not stay one in its lowercase form.
    pub fn required_literals(&self) -> Option<Vec<String>> {
        match self {
            ValueTest::Str(matchers) => {
                let mut literals = Vec::with_capacity(matchers.len());
                for matcher in matchers {
                    let literal = matcher
                        .literal()
                        .filter(|l| !l.is_empty() && l.is_ascii())?;
                    literals.push(literal.to_ascii_lowercase());
                }
                Some(literals)
            }
            ValueTest::AnyOf(tests) => {
                let mut literals = Vec::new();
                for test in tests {
                    literals.extend(test.required_literals()?);
                }
                Some(literals)
            }
            _ => None,
        }
    }
}

/// Numbers in events: decimal, or `0x` hexadecimal (Windows writes flags and
/// ids that way).
fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok().map(|v| v as f64);
    }
    text.parse().ok()
}

/// A detection value as written in the rule.
#[derive(Clone, Debug, PartialEq)]
pub enum RawValue {
    /// A string (also numbers that the YAML spelled as text).
    Str(String),
    /// An integer or a real number, with its text.
    Num(String),
    /// `true` / `false`.
    Bool(bool),
    /// `null` / `~` / empty.
    Null,
}

impl RawValue {
    fn text(&self) -> String {
        match self {
            RawValue::Str(s) | RawValue::Num(s) => s.clone(),
            RawValue::Bool(b) => b.to_string(),
            RawValue::Null => String::new(),
        }
    }
}

/// The comparison a value asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

/// A transformation applied to the value before comparing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transform {
    Base64,
    Base64Offset,
    Utf16Le,
    Utf16Be,
    /// UTF-16 little endian with a byte-order mark (Sigma's `utf16`).
    Utf16Bom,
    Windash,
}

/// The modifiers of one detection item, validated.
#[derive(Clone, Debug, Default)]
pub struct Modifiers {
    compare: Option<Compare>,
    transforms: Vec<Transform>,
    /// `all`: every value must match (instead of any).
    pub all: bool,
    cased: bool,
    re: Option<(bool, bool, bool)>,
    cidr: bool,
    num: Option<NumOp>,
    exists: bool,
    fieldref: bool,
    /// `expand`: `%name%` placeholders are replaced by the hunt's values.
    pub expand: bool,
    /// The tested text holds one value per line (the host's `@values`):
    /// anchors and wildcards stay within a line.
    lines: bool,
}

impl Modifiers {
    /// Parses the modifier names of `Field|a|b|c`.
    pub fn parse(names: &[&str]) -> Result<Modifiers, RuleError> {
        let mut m = Modifiers::default();
        let mut iter = names.iter().peekable();
        while let Some(&name) = iter.next() {
            let set_compare = |m: &mut Modifiers, c| {
                if m.compare.is_some_and(|old| old != c) {
                    return Err(RuleError::Unsupported(format!(
                        "modifier combination `{}`",
                        names.join("|")
                    )));
                }
                m.compare = Some(c);
                Ok(())
            };
            match name {
                "contains" => set_compare(&mut m, Compare::Contains)?,
                "startswith" => set_compare(&mut m, Compare::StartsWith)?,
                "endswith" => set_compare(&mut m, Compare::EndsWith)?,
                "all" => m.all = true,
                "cased" => m.cased = true,
                "base64" => m.transforms.push(Transform::Base64),
                "base64offset" => m.transforms.push(Transform::Base64Offset),
                "utf16le" | "wide" => m.transforms.push(Transform::Utf16Le),
                "utf16be" => m.transforms.push(Transform::Utf16Be),
                // Sigma's `utf16` is UTF-16 with a byte-order mark; little
                // endian as Windows writes it.
                "utf16" => m.transforms.push(Transform::Utf16Bom),
                "windash" => m.transforms.push(Transform::Windash),
                "re" => {
                    let (mut i, mut ml, mut s) = (false, false, false);
                    while let Some(&&flag) = iter.peek() {
                        match flag {
                            "i" | "ignorecase" => i = true,
                            "m" | "multiline" => ml = true,
                            "s" | "dotall" => s = true,
                            _ => break,
                        }
                        iter.next();
                    }
                    m.re = Some((i, ml, s));
                }
                "cidr" => m.cidr = true,
                "lt" => m.num = Some(NumOp::Lt),
                "lte" => m.num = Some(NumOp::Lte),
                "gt" => m.num = Some(NumOp::Gt),
                "gte" => m.num = Some(NumOp::Gte),
                "exists" => m.exists = true,
                "fieldref" => m.fieldref = true,
                "expand" => m.expand = true,
                other => {
                    return Err(RuleError::Unsupported(format!("modifier `{other}`")));
                }
            }
        }
        let special = [
            m.re.is_some(),
            m.cidr,
            m.num.is_some(),
            m.exists,
            m.fieldref,
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        if special > 1 || (special == 1 && (!m.transforms.is_empty() || m.compare.is_some())) {
            return Err(RuleError::Unsupported(format!(
                "modifier combination `{}`",
                names.join("|")
            )));
        }
        Ok(m)
    }

    /// For keyword searches: a value without a comparison modifier is
    /// searched for anywhere in a field (full-text semantics), as Sigma
    /// backends do.
    /// As [`Modifiers::for_keywords`], for a search of the `@values`
    /// pseudo-field (every value of the event, one per line): a match must
    /// lie within one value, as it would searching the fields one by one.
    pub fn for_keywords_over_lines(mut self) -> Self {
        self.lines = true;
        self.for_keywords()
    }

    /// For a keyword search (no field): a plain value is a substring
    /// match, as Sigma's full-text keywords are.
    pub fn for_keywords(mut self) -> Self {
        let special =
            self.re.is_some() || self.cidr || self.num.is_some() || self.exists || self.fieldref;
        if self.compare.is_none() && !special {
            self.compare = Some(Compare::Contains);
        }
        self
    }

    /// Compiles one value under these modifiers. `resolve` maps a field name
    /// (for `fieldref`) to its index.
    pub fn compile(
        &self,
        value: &RawValue,
        resolve: &mut dyn FnMut(&str) -> Result<usize, RuleError>,
    ) -> Result<ValueTest, RuleError> {
        if self.exists {
            return match value {
                RawValue::Bool(b) => Ok(ValueTest::Exists(*b)),
                RawValue::Str(s) if s.eq_ignore_ascii_case("true") => Ok(ValueTest::Exists(true)),
                RawValue::Str(s) if s.eq_ignore_ascii_case("false") => Ok(ValueTest::Exists(false)),
                other => Err(RuleError::Invalid(format!(
                    "`exists` needs true or false, got {other:?}"
                ))),
            };
        }
        if let Some((i, m, s)) = self.re {
            let RawValue::Str(pattern) = value else {
                return Err(RuleError::Invalid(format!(
                    "`re` needs a string, got {value:?}"
                )));
            };
            return match build_regex(pattern, i, m || self.lines, s && !self.lines) {
                Ok(re) => Ok(ValueTest::Regex(re)),
                Err(error) => match LiteralSet::from_pattern(pattern, i) {
                    Some(set) => Ok(ValueTest::Literals(set)),
                    None => Err(error),
                },
            };
        }
        if self.cidr {
            let text = value.text();
            return Cidr::parse(&text)
                .map(ValueTest::Cidr)
                .ok_or_else(|| RuleError::Invalid(format!("`{text}` is not a CIDR network")));
        }
        if let Some(op) = self.num {
            let text = value.text();
            return text
                .trim()
                .parse::<f64>()
                .map(|n| ValueTest::Num(op, n))
                .map_err(|_| RuleError::Invalid(format!("`{text}` is not a number")));
        }
        if self.fieldref {
            let RawValue::Str(name) = value else {
                return Err(RuleError::Invalid(format!(
                    "`fieldref` needs a field name, got {value:?}"
                )));
            };
            return Ok(ValueTest::FieldRef {
                field: resolve(name)?,
                cased: self.cased,
            });
        }
        let text = match value {
            RawValue::Null => {
                if self.compare.is_some() || !self.transforms.is_empty() {
                    return Err(RuleError::Invalid(
                        "null value with a string modifier".to_owned(),
                    ));
                }
                return Ok(ValueTest::Null);
            }
            RawValue::Str(s) => s.clone(),
            other => other.text(),
        };
        // Numbers and booleans have no wildcards.
        let mut pieces = match value {
            RawValue::Str(s) => parse_wildcards(s),
            _ if text.is_empty() => Vec::new(),
            _ => vec![Piece::Lit(text)],
        };
        let mut cased = self.cased;
        let mut variants: Vec<Vec<Piece>> = Vec::new();
        let mut bytes_stage: Option<Vec<Vec<u8>>> = None;
        for transform in &self.transforms {
            match transform {
                Transform::Windash => {
                    if bytes_stage.is_some() {
                        return Err(RuleError::Unsupported(
                            "`windash` after an encoding modifier".to_owned(),
                        ));
                    }
                    pieces = windash(&pieces);
                }
                Transform::Utf16Le | Transform::Utf16Be | Transform::Utf16Bom => {
                    let inputs = take_bytes(&mut bytes_stage, &pieces)?;
                    bytes_stage = Some(
                        inputs
                            .into_iter()
                            .map(|b| {
                                let text = String::from_utf8_lossy(&b).into_owned();
                                let mut out: Vec<u8> = if *transform == Transform::Utf16Bom {
                                    vec![0xFF, 0xFE]
                                } else {
                                    Vec::new()
                                };
                                out.extend(text.encode_utf16().flat_map(|u| {
                                    if *transform == Transform::Utf16Be {
                                        u.to_be_bytes()
                                    } else {
                                        u.to_le_bytes()
                                    }
                                }));
                                out
                            })
                            .collect(),
                    );
                }
                Transform::Base64 => {
                    let inputs = take_bytes(&mut bytes_stage, &pieces)?;
                    bytes_stage = Some(
                        inputs
                            .into_iter()
                            .map(|b| base64::engine::general_purpose::STANDARD.encode(b).into())
                            .collect(),
                    );
                    cased = true;
                }
                Transform::Base64Offset => {
                    let inputs = take_bytes(&mut bytes_stage, &pieces)?;
                    bytes_stage = Some(
                        inputs
                            .into_iter()
                            .flat_map(|b| base64_offsets(&b))
                            .map(String::into_bytes)
                            .collect(),
                    );
                    cased = true;
                }
            }
        }
        match bytes_stage {
            Some(outputs) => {
                for bytes in outputs {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    variants.push(if text.is_empty() {
                        Vec::new()
                    } else {
                        vec![Piece::Lit(text)]
                    });
                }
            }
            None => variants.push(pieces),
        }
        let compare = self.compare.unwrap_or(Compare::Equals);
        let matchers = variants
            .into_iter()
            .take(MAX_VARIANTS)
            .map(|mut pieces| {
                if matches!(compare, Compare::Contains | Compare::EndsWith)
                    && pieces.first() != Some(&Piece::Star)
                {
                    pieces.insert(0, Piece::Star);
                }
                if matches!(compare, Compare::Contains | Compare::StartsWith)
                    && pieces.last() != Some(&Piece::Star)
                {
                    pieces.push(Piece::Star);
                }
                StrMatcher::compile_in(&pieces, cased, self.lines)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ValueTest::Str(matchers))
    }
}

/// The literal bytes an encoding modifier starts from: the previous encoding
/// stage's output, or the value's text (which may not have wildcards).
fn take_bytes(
    stage: &mut Option<Vec<Vec<u8>>>,
    pieces: &[Piece],
) -> Result<Vec<Vec<u8>>, RuleError> {
    if let Some(previous) = stage.take() {
        return Ok(previous);
    }
    let mut text = String::new();
    for piece in pieces {
        match piece {
            Piece::Lit(s) => text.push_str(s),
            _ => {
                return Err(RuleError::Unsupported(
                    "wildcards in a value with an encoding modifier (base64, utf16)".to_owned(),
                ));
            }
        }
    }
    Ok(vec![text.into_bytes()])
}

/// The three base64 encodings of `value` at the offsets 0, 1 and 2 inside a
/// longer encoded text, without the characters that depend on the
/// neighbouring bytes (Sigma's `base64offset`).
pub fn base64_offsets(value: &[u8]) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    let mut out = Vec::with_capacity(3);
    for (i, start) in START.into_iter().enumerate() {
        let mut padded = vec![b' '; i];
        padded.extend_from_slice(value);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&padded);
        let end_trim = match (value.len() + i) % 3 {
            0 => 0,
            1 => 3,
            _ => 2,
        };
        let end = encoded.len().saturating_sub(end_trim);
        out.push(encoded.get(start..end).unwrap_or("").to_owned());
    }
    out
}

/// Sigma's `windash`: a `-` or `/` that starts a command-line switch may be
/// written with any of `-`, `/`, en dash, em dash or horizontal bar.
fn windash(pieces: &[Piece]) -> Vec<Piece> {
    const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    let mut out = Vec::new();
    for piece in pieces {
        let Piece::Lit(text) = piece else {
            out.push(piece.clone());
            continue;
        };
        let chars: Vec<char> = text.chars().collect();
        let mut lit = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let before_is_word = i > 0 && is_word(chars[i - 1]);
            let after_is_word = chars.get(i + 1).is_some_and(|&n| is_word(n));
            let at_start_of_switch = if i == 0 {
                // The previous piece decides (a wildcard counts as non-word).
                !matches!(out.last(), Some(Piece::Lit(s)) if s.chars().last().is_some_and(is_word))
            } else {
                !before_is_word
            };
            if (c == '-' || c == '/') && at_start_of_switch && after_is_word {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(Piece::Class(DASHES.to_vec()));
            } else {
                lit.push(c);
            }
        }
        if !lit.is_empty() {
            out.push(Piece::Lit(lit));
        }
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoFields;
    impl FieldSource for NoFields {
        fn value(&self, _: usize) -> Option<(&str, &str)> {
            None
        }
    }

    fn test(mods: &[&str], value: RawValue) -> ValueTest {
        Modifiers::parse(mods)
            .unwrap()
            .compile(&value, &mut |_| Ok(0))
            .unwrap()
    }

    fn check(t: &ValueTest, v: &str) -> bool {
        t.matches(Some((v, &v.to_lowercase())), &NoFields)
    }

    fn s(text: &str) -> RawValue {
        RawValue::Str(text.to_owned())
    }

    #[test]
    fn wildcards_and_escapes() {
        // A backslash before `*` escapes it; `\\*` is a backslash then a wildcard.
        assert_eq!(
            parse_wildcards(r"C:\Windows\*.exe"),
            vec![Piece::Lit(r"C:\Windows*.exe".into())]
        );
        assert_eq!(
            parse_wildcards(r"C:\Windows\\*.exe"),
            vec![
                Piece::Lit(r"C:\Windows\".into()),
                Piece::Star,
                Piece::Lit(".exe".into())
            ]
        );
        assert_eq!(
            parse_wildcards(r"a\*b\?c\\"),
            vec![Piece::Lit(r"a*b?c\".into())]
        );
        let t = test(&[], s("cmd?.exe"));
        assert!(check(&t, "CMD1.exe"));
        assert!(!check(&t, "cmd.exe"));
        let t = test(&[], s(r"*\cmd.exe"));
        assert!(check(&t, r"C:\Windows\System32\CMD.EXE"));
        let t = test(&["contains"], s(r"lit\*star"));
        assert!(check(&t, "a lit*star b"));
        assert!(!check(&t, "a litXstar b"));
        // SigmaHQ's psexec pipe rule: the literal share name `\\*\IPC$`.
        let t = test(&[], s(r"\\\\\*\\IPC$"));
        assert!(check(&t, r"\\*\IPC$"));
        assert!(!check(&t, r"\\host\IPC$"));
        // `?` is one character, also under `endswith` (SigmaHQ's AD user
        // enumeration rule reads access masks this way).
        let t = test(&["endswith"], s("1?"));
        assert!(check(&t, "0x10"));
        assert!(!check(&t, "0x1"));
        let t = test(&[], s("a*b*c"));
        assert!(check(&t, "aXXbYYc"));
        assert!(!check(&t, "aXXbYYcd"));
    }

    #[test]
    fn comparisons_ignore_case_unless_cased() {
        let t = test(&["contains"], s("MimiKatz"));
        assert!(check(&t, "run mimikatz.exe"));
        let t = test(&["contains", "cased"], s("MimiKatz"));
        assert!(!check(&t, "run mimikatz.exe"));
        assert!(check(&t, "run MimiKatz.exe"));
        let t = test(&["startswith"], s("C:\\Users"));
        assert!(check(&t, "c:\\users\\x"));
        let t = test(&["endswith"], s(".PS1"));
        assert!(check(&t, "a.ps1"));
        let t = test(&[], RawValue::Num("4688".into()));
        assert!(check(&t, "4688"));
        assert!(!check(&t, "46880"));
    }

    #[test]
    fn regex_flags() {
        let t = test(&["re"], s("^ab+c$"));
        assert!(check(&t, "abbc"));
        assert!(!check(&t, "ABBC"));
        let t = test(&["re", "i"], s("^ab+c$"));
        assert!(check(&t, "ABBC"));
        let t = test(&["re", "m"], s("^x$"));
        assert!(check(&t, "a\nx\nb"));
        let t = test(&["re", "s"], s("a.b"));
        assert!(check(&t, "a\nb"));
    }

    #[test]
    fn base64_and_offsets() {
        let t = test(&["base64"], s("http://"));
        assert!(check(&t, "aHR0cDovLw=="));
        // base64offset finds the text whatever its alignment.
        let t = test(&["base64offset", "contains"], s("http://"));
        for prefix in ["", "x", "xy", "xyz"] {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{prefix}http://evil"));
            assert!(check(&t, &encoded), "{prefix}: {encoded}");
        }
        assert!(!check(&t, "aHR0cHM6Ly9ldmls"));
        // utf16le then base64offset: PowerShell -EncodedCommand.
        let t = test(&["utf16le", "base64offset", "contains"], s("Invoke-"));
        let wide: Vec<u8> = "IEX; Invoke-Mimikatz"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(wide);
        assert!(check(&t, &encoded));
        let t = test(&["wide", "base64"], s("a"));
        assert!(check(&t, "YQA="));
        let t = test(&["utf16be", "base64"], s("a"));
        assert!(check(&t, "AGE="));
        // `utf16`: with the little-endian byte-order mark FF FE.
        let t = test(&["utf16", "base64"], s("a"));
        assert!(check(&t, "//5hAA=="));
        assert!(
            Modifiers::parse(&["base64", "contains"])
                .unwrap()
                .compile(&s("a*b"), &mut |_| Ok(0))
                .is_err()
        );
    }

    /// An indicator list as one `re` value outgrows the regex engine's
    /// budget; it becomes a literal set with the same meaning (unanchored,
    /// case-insensitive under `(?i)` or `re|i`), while a real regex of that
    /// size is still refused with the engine's reason.
    #[test]
    fn huge_literal_alternations_become_literal_sets() {
        let domains: Vec<String> = (0..30_000)
            .map(|i| format!("host{i}\\.evil\\.example"))
            .collect();
        let pattern = format!("(?i)({})", domains.join("|"));
        assert!(
            build_regex(&pattern, false, false, false).is_err(),
            "the pattern must be over the regex budget for this test to mean anything"
        );
        let t = test(&["re"], s(&pattern));
        let ValueTest::Literals(set) = &t else {
            panic!("expected a literal set")
        };
        assert_eq!(set.len(), 30_000);
        assert!(check(&t, "GET http://HOST29999.evil.example/x"));
        assert!(check(&t, "host0.evil.example"));
        assert!(!check(&t, "host0Xevil.example"), "the dots are literal");
        assert!(!check(&t, "host30000.evil.exampl"));
        // Case-sensitive without `(?i)` or `re|i`.
        let set = |pattern: &str, i: bool| LiteralSet::from_pattern(pattern, i);
        let cased = set("(?:host7|HOST8)", false).expect("a literal set");
        assert!(cased.is_match("x host7 y", "x host7 y"));
        assert!(!cased.is_match("HOST7", "host7"));
        assert!(cased.is_match("HOST8", "host8"));
        assert!(
            set("(?i-s)(?:Host7|x)", false)
                .expect("set")
                .is_match("HOST7", "host7")
        );
        assert!(
            set("host7|x", true)
                .expect("set")
                .is_match("HOST7", "host7")
        );
        assert!(
            !set("(?-i:host7|x)", false)
                .expect("set")
                .is_match("HOST7", "host7")
        );
        // Anything but literals is a real regex.
        for pattern in ["^(a|b)", "(a|b+)", "(a||b)", "(a|[bc])", "a", "(a|b)(c|d)"] {
            assert!(set(pattern, false).is_none(), "{pattern}");
        }
        // Not a pure alternation (a class in a branch): still refused, with
        // the regex engine's reason.
        let classes = format!("(?i)({}|[a-z]+\\d{{3}})", domains.join("|"));
        let err = Modifiers::parse(&["re"])
            .unwrap()
            .compile(&s(&classes), &mut |_| Ok(0))
            .unwrap_err();
        assert!(err.to_string().contains("size limit"), "{err}");
        // Small alternations stay regexes.
        assert!(matches!(test(&["re"], s("(?i)(a|b)")), ValueTest::Regex(_)));
    }

    #[test]
    fn windash_variants() {
        let t = test(&["windash", "contains"], s(" -enc "));
        for v in ["x -enc y", "x /enc y", "x \u{2013}enc y", "x \u{2014}enc y"] {
            assert!(check(&t, v), "{v}");
        }
        assert!(!check(&t, "x enc y"));
        // Dashes inside words are not switches.
        let t = test(&["windash"], s("a-b"));
        assert!(check(&t, "a-b"));
        assert!(!check(&t, "a/b"));
    }

    #[test]
    fn cidr_numbers_exists_null() {
        let t = test(&["cidr"], s("10.0.0.0/8"));
        assert!(check(&t, "10.1.2.3"));
        assert!(!check(&t, "11.1.2.3"));
        assert!(check(&t, "::ffff:10.0.0.1"));
        // The module's own copy of the mask test turned every IPv4-mapped
        // address into IPv4 first, so an IPv6 network written for mapped
        // addresses held none of them.
        let t = test(&["cidr"], s("::ffff:0:0/96"));
        assert!(check(&t, "::ffff:10.0.0.1"));
        assert!(!check(&t, "10.0.0.1"));
        assert!(!check(&t, "2001:db8::1"));
        let t = test(&["cidr"], s(" 192.0.2.7 "));
        assert!(check(&t, "192.0.2.7"));
        assert!(!check(&t, "192.0.2.8"));
        let t = test(&["cidr"], s("0.0.0.0/0"));
        assert!(check(&t, "203.0.113.1") && !check(&t, "2001:db8::1"));
        for bad in [
            "10.0.0.0/33",
            "fe80::/129",
            "10.0.0.0/",
            "010.0.0.0/8",
            "host/8",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
        let t = test(&["cidr"], s("fe80::/10"));
        assert!(check(&t, "fe80::1"));
        assert!(!check(&t, "not an ip"));
        let t = test(&["gte"], RawValue::Num("5".into()));
        assert!(check(&t, "5"));
        assert!(check(&t, "0x10"));
        assert!(!check(&t, "4"));
        let t = test(&["lt"], RawValue::Num("5".into()));
        assert!(check(&t, "4.5"));
        let t = test(&["exists"], RawValue::Bool(true));
        assert!(check(&t, "x"));
        assert!(!t.matches(None, &NoFields));
        let t = test(&["exists"], RawValue::Bool(false));
        assert!(t.matches(None, &NoFields));
        let t = test(&[], RawValue::Null);
        assert!(t.matches(None, &NoFields));
        assert!(check(&t, ""));
        assert!(!check(&t, "x"));
        let t = test(&[], s(""));
        assert!(check(&t, ""));
        assert!(!check(&t, "x"));
    }

    /// `Cidr::contains` against a bit-by-bit reference (the first `prefix`
    /// bits are equal) for every prefix length and addresses near each
    /// network's edges.
    #[test]
    fn cidr_containment_agrees_with_comparing_the_leading_bits() {
        fn leading_bits_equal(a: u128, b: u128, width: u32, prefix: u32) -> bool {
            (0..prefix).all(|i| (a >> (width - 1 - i)) & 1 == (b >> (width - 1 - i)) & 1)
        }
        let v4_bases = [0xc633_6400_u32, 0x0a00_0000, 0xffff_ffff, 0];
        for base in v4_bases {
            for prefix in 0..=32u32 {
                let net =
                    Cidr::parse(&format!("{}/{prefix}", std::net::Ipv4Addr::from(base))).unwrap();
                for delta in [0u32, 1, 255, 256, 1 << 16, 1 << 24, 1 << 31, u32::MAX] {
                    for addr in [base.wrapping_add(delta), base.wrapping_sub(delta)] {
                        let want =
                            leading_bits_equal(u128::from(addr), u128::from(base), 32, prefix);
                        let v4 = std::net::Ipv4Addr::from(addr);
                        assert_eq!(net.contains(IpAddr::V4(v4)), want, "{v4} in /{prefix}");
                        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                        assert_eq!(net.contains(mapped), want, "{mapped} in /{prefix}");
                    }
                }
            }
        }
        let v6_base = 0x2001_0db8_0000_0000_0000_0000_0000_0001_u128;
        for prefix in 0..=128u32 {
            let net =
                Cidr::parse(&format!("{}/{prefix}", std::net::Ipv6Addr::from(v6_base))).unwrap();
            for shift in [0u32, 1, 16, 63, 64, 96, 127] {
                for addr in [v6_base ^ (1 << shift), v6_base.wrapping_add(1 << shift)] {
                    let want = leading_bits_equal(addr, v6_base, 128, prefix);
                    let v6 = std::net::Ipv6Addr::from(addr);
                    assert_eq!(net.contains(IpAddr::V6(v6)), want, "{v6} in /{prefix}");
                }
            }
        }
    }

    #[test]
    fn placeholders_expand_to_every_value() {
        let mut values = std::collections::HashMap::new();
        values.insert(
            "admins".to_owned(),
            vec!["alice".to_owned(), "bob".to_owned()],
        );
        assert_eq!(
            expand_placeholders(r"CORP\%admins%", &values).unwrap(),
            [r"CORP\alice", r"CORP\bob"]
        );
        assert_eq!(expand_placeholders("100%", &values).unwrap(), ["100%"]);
        let err = expand_placeholders("%nope%", &values).unwrap_err();
        assert!(err.to_string().contains("placeholder.nope"), "{err}");
    }

    #[test]
    fn unsupported_modifiers_are_named() {
        let err = Modifiers::parse(&["frobnicate"]).unwrap_err();
        assert!(err.to_string().contains("frobnicate"), "{err}");
        assert!(Modifiers::parse(&["re", "contains"]).is_err());
        assert!(Modifiers::parse(&["contains", "expand"]).unwrap().expand);
        assert!(Modifiers::parse(&["contains", "startswith"]).is_err());
    }
}
