//! The compiled plan: what runs beside the shards, what merges, what runs
//! on the coordinator, and what the host prefilter can do first.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ast::{CmpOp, Expr, Func, Stage, TIME_FIELD};
use crate::error::Error;
use crate::eval::Net;
use crate::value::{Value, format_number};

/// Version of the plan's JSON form; a plan of another version is refused.
pub const PLAN_VERSION: u32 = 1;

/// A compiled query.
///
/// Split in three: `per_event` stages (`where`, `eval`, `fields`) run
/// beside the shards on each event; the first aggregation (`stats`, `top`,
/// `rare`, `timechart`) builds a mergeable partial per shard; `after` runs
/// on the coordinator over the merged table. A query without aggregation
/// returns rows: `shard_bound` (the leading `sort`/`dedup`/`head` that give
/// the same answer per shard and again over the union) bounds each shard's
/// rows, and `after` runs over the merged rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// The query as written.
    pub query: String,
    /// The event fields the query reads, in order of first use: what the
    /// module declares, and the order of a projected event's values.
    pub fields: Vec<String>,
    /// Per-event stages, run beside the shards.
    pub per_event: Vec<Stage>,
    /// The first aggregation, computed per shard as a mergeable partial.
    pub aggregation: Option<Stage>,
    /// Without aggregation: the row stages each shard applies before
    /// returning its rows.
    pub shard_bound: Vec<Stage>,
    /// Stages run on the coordinator over the merged result.
    pub after: Vec<Stage>,
    /// What the host prefilter can check before the query sees an event.
    pub pushdown: Pushdown,
}

pub use quarry_contract::predicate::{Clause, MatchOp};

/// The `where` conditions the host prefilter can evaluate (and, for
/// `equals`/`contains`/`starts-with`/`ends-with`/`exists`, skip whole
/// blocks on): every clause must hold, and in each `any_of` group one
/// clause. Sound: every event the query keeps passes it, so it only saves
/// work. Conditions it cannot express are simply not pushed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushdown {
    /// All must hold.
    pub clauses: Vec<Clause>,
    /// In each group, one must hold.
    pub any_of: Vec<Vec<Clause>>,
}

impl Pushdown {
    /// Nothing pushed: the host passes every event.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty() && self.any_of.is_empty()
    }
}

/// Parses and compiles `query`.
pub fn compile(query: &str) -> Result<Plan, Error> {
    let (offsets, stages): (Vec<usize>, Vec<Stage>) =
        crate::parser::parse(query)?.into_iter().unzip();
    let first_agg = stages.iter().position(Stage::is_aggregation);
    let (per_event, aggregation, shard_bound, after) = match first_agg {
        Some(i) => {
            if let Some(j) = stages[..i].iter().position(|s| !s.is_per_event()) {
                let bad = &stages[j];
                let name = stage_name(bad);
                let agg = stage_name(&stages[i]);
                return Err(Error::parse(
                    query,
                    offsets[j],
                    format!("`{name}` before `{agg}` is not supported: shards aggregate their events independently"),
                    Some(match bad {
                        Stage::Dedup(_) => "count distinct values with `dc(field)`, or move `dedup` after the aggregation".to_owned(),
                        _ => format!("move `{name}` after `{agg}`"),
                    }),
                ));
            }
            (
                stages[..i].to_vec(),
                Some(stages[i].clone()),
                Vec::new(),
                stages[i + 1..].to_vec(),
            )
        }
        None => {
            let split = stages
                .iter()
                .position(|s| !s.is_per_event())
                .unwrap_or(stages.len());
            let after = stages[split..].to_vec();
            (
                stages[..split].to_vec(),
                None,
                distributable_prefix(&after),
                after,
            )
        }
    };
    let fields = fields_read(
        &per_event,
        aggregation.as_ref(),
        if aggregation.is_none() { &after } else { &[] },
    );
    let pushdown = pushdown(&per_event);
    Ok(Plan {
        version: PLAN_VERSION,
        query: query.to_owned(),
        fields,
        per_event,
        aggregation,
        shard_bound,
        after,
        pushdown,
    })
}

impl Plan {
    /// The event fields the query reads.
    pub fn fields_read(&self) -> &[String] {
        &self.fields
    }

    /// The clauses the host prefilter can evaluate.
    pub fn pushdown(&self) -> &Pushdown {
        &self.pushdown
    }

    /// The plan's stable JSON form.
    pub fn to_json(&self) -> String {
        // A plan holds only strings, numbers and enums: always serialisable.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A plan from its JSON form, checked (version, regular expressions,
    /// networks).
    pub fn from_json(json: &str) -> Result<Plan, Error> {
        let plan: Plan = serde_json::from_str(json).map_err(|e| Error::Plan(e.to_string()))?;
        if plan.version != PLAN_VERSION {
            return Err(Error::Plan(format!(
                "plan version {} is not {PLAN_VERSION}; compile the query with this version",
                plan.version
            )));
        }
        let mut problem = None;
        let stages = plan
            .per_event
            .iter()
            .chain(&plan.shard_bound)
            .chain(&plan.after);
        for stage in stages {
            let exprs: Vec<&Expr> = match stage {
                Stage::Where(e) => vec![e],
                Stage::Eval(assignments) => assignments.iter().map(|(_, e)| e).collect(),
                _ => Vec::new(),
            };
            for expr in exprs {
                check_expr(expr, &mut problem);
            }
        }
        match problem {
            Some(reason) => Err(Error::Plan(reason)),
            None => Ok(plan),
        }
    }

    /// A short fingerprint of the plan, carried by partials so that only
    /// partials of the same plan merge.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.to_json().bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// A field the query reads that the shards do not have, with the known
/// names closest to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownField {
    /// The field as the query names it.
    pub field: String,
    /// Up to three known names, closest first (a different case counts as
    /// closest).
    pub closest: Vec<String>,
}

impl Plan {
    /// The fields the query reads that are not among `known` (the field
    /// names in the shards' statistics), each with the closest known names:
    /// warnings for the hunter, not errors, since a field may just be absent
    /// from the shards in scope. A name with an EVTX prefix is known when
    /// the name without it is.
    pub fn unknown_fields<'a>(
        &self,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Vec<UnknownField> {
        let known: BTreeSet<&str> = known.into_iter().collect();
        let is_known = |field: &str| {
            known.contains(field)
                || crate::exec::EVTX_PREFIXES.iter().any(|p| {
                    field
                        .strip_prefix(p)
                        .is_some_and(|rest| known.contains(rest))
                })
        };
        self.fields
            .iter()
            .filter(|field| field.as_str() != "@values" && !is_known(field))
            .map(|field| {
                let lower = field.to_lowercase();
                let mut ranked: Vec<(usize, &str)> = known
                    .iter()
                    .map(|k| (crate::parser::edit_distance(&lower, &k.to_lowercase()), *k))
                    .filter(|(d, k)| *d <= 2.max(k.chars().count().div_ceil(3)))
                    .collect();
                ranked.sort();
                UnknownField {
                    field: field.clone(),
                    closest: ranked
                        .into_iter()
                        .take(3)
                        .map(|(_, k)| k.to_owned())
                        .collect(),
                }
            })
            .collect()
    }
}

fn check_expr(expr: &Expr, problem: &mut Option<String>) {
    match expr {
        Expr::Matches {
            pattern,
            cs,
            regex,
            expr,
        } => {
            if regex.get(pattern, *cs).is_none() {
                *problem = Some(format!("`{pattern}` is not a valid regular expression"));
            }
            check_expr(expr, problem);
        }
        Expr::Cidr { net, expr } => {
            if let Err(e) = Net::parse(net) {
                *problem = Some(format!("`{net}`: {e}"));
            }
            check_expr(expr, problem);
        }
        Expr::Not(e) | Expr::Neg(e) | Expr::In { expr: e, .. } => check_expr(e, problem),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Concat(a, b) => {
            check_expr(a, problem);
            check_expr(b, problem);
        }
        Expr::Cmp { left, right, .. } | Expr::Arith { left, right, .. } => {
            check_expr(left, problem);
            check_expr(right, problem);
        }
        Expr::Call { args, .. } => args.iter().for_each(|a| check_expr(a, problem)),
        Expr::Lit(_) | Expr::Field(_) => {}
    }
}

pub(crate) fn stage_name(stage: &Stage) -> &'static str {
    match stage {
        Stage::Where(_) => "where",
        Stage::Fields(_) => "fields",
        Stage::Eval(_) => "eval",
        Stage::Stats { .. } => "stats",
        Stage::Top { rare: false, .. } => "top",
        Stage::Top { rare: true, .. } => "rare",
        Stage::Timechart { .. } => "timechart",
        Stage::Sort(_) => "sort",
        Stage::Head(_) => "head",
        Stage::Dedup(_) => "dedup",
    }
}

/// The leading row stages a shard can apply and still give the same rows
/// after the merge: any `sort`s, then at most one `dedup`, then at most one
/// `head`. (A `head` followed by anything else, or a `dedup` after a
/// `head`, would drop rows that another shard's rows make relevant.)
fn distributable_prefix(after: &[Stage]) -> Vec<Stage> {
    let mut prefix = Vec::new();
    let mut deduped = false;
    for stage in after {
        match stage {
            Stage::Sort(_) if !deduped => prefix.push(stage.clone()),
            Stage::Dedup(_) if !deduped => {
                deduped = true;
                prefix.push(stage.clone());
            }
            Stage::Head(_) => {
                prefix.push(stage.clone());
                break;
            }
            _ => break,
        }
    }
    prefix
}

/// The event fields read, in order of first use. A name an `eval` defined
/// is a computed column, not an event field; after `fields`, names it
/// dropped read nothing.
fn fields_read(per_event: &[Stage], aggregation: Option<&Stage>, rows: &[Stage]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut defined: BTreeSet<String> = BTreeSet::new();
    let mut kept: Option<BTreeSet<String>> = None;
    let mut read = |names: Vec<String>,
                    defined: &BTreeSet<String>,
                    kept: &Option<BTreeSet<String>>| {
        for name in names {
            let visible = kept.as_ref().is_none_or(|k| k.contains(&name));
            if name != TIME_FIELD && visible && !defined.contains(&name) && !out.contains(&name) {
                out.push(name);
            }
        }
    };
    let all = per_event.iter().chain(aggregation).chain(rows);
    for stage in all {
        match stage {
            Stage::Where(expr) => {
                let mut names = Vec::new();
                expr.fields(&mut names);
                read(names, &defined, &kept);
            }
            Stage::Eval(assignments) => {
                for (name, expr) in assignments {
                    let mut names = Vec::new();
                    expr.fields(&mut names);
                    read(names, &defined, &kept);
                    defined.insert(name.clone());
                    if let Some(k) = kept.as_mut() {
                        k.insert(name.clone());
                    }
                }
            }
            Stage::Fields(names) => {
                read(names.clone(), &defined, &kept);
                kept = Some(names.iter().cloned().collect());
            }
            Stage::Stats { aggs, by } => {
                read(by.clone(), &defined, &kept);
                read(
                    aggs.iter().filter_map(|a| a.field.clone()).collect(),
                    &defined,
                    &kept,
                );
            }
            Stage::Timechart { aggs, by, .. } => {
                read(by.iter().cloned().collect(), &defined, &kept);
                read(
                    aggs.iter().filter_map(|a| a.field.clone()).collect(),
                    &defined,
                    &kept,
                );
            }
            Stage::Top { field, by, .. } => {
                read(by.clone(), &defined, &kept);
                read(vec![field.clone()], &defined, &kept);
            }
            Stage::Sort(keys) => read(
                keys.iter().map(|k| k.field.clone()).collect(),
                &defined,
                &kept,
            ),
            Stage::Dedup(names) => read(names.clone(), &defined, &kept),
            Stage::Head(_) => {}
        }
    }
    out
}

// ---- pushdown ----

/// Pushes the conjuncts of the leading `where` stages, for fields no
/// earlier `eval` redefined. Stops at the first stage that is not per-event
/// (impossible here: `per_event` holds only `where`, `eval` and `fields`).
fn pushdown(per_event: &[Stage]) -> Pushdown {
    let mut result = Pushdown::default();
    let mut redefined: BTreeSet<String> = BTreeSet::new();
    for stage in per_event {
        match stage {
            Stage::Where(expr) => {
                let mut conjuncts = Vec::new();
                split_and(expr, &mut conjuncts);
                for conjunct in conjuncts {
                    let Some(mut alternatives) = disjunction(conjunct, &redefined) else {
                        continue;
                    };
                    if alternatives.len() == 1 {
                        result.clauses.extend(alternatives.pop());
                    } else {
                        result.any_of.push(alternatives);
                    }
                }
            }
            Stage::Eval(assignments) => {
                redefined.extend(assignments.iter().map(|(n, _)| n.clone()))
            }
            _ => {}
        }
    }
    result
}

fn split_and<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::And(a, b) => {
            split_and(a, out);
            split_and(b, out);
        }
        other => out.push(other),
    }
}

/// The clauses one of which every event passing `expr` satisfies; `None`
/// when some alternative cannot be pushed.
fn disjunction(expr: &Expr, redefined: &BTreeSet<String>) -> Option<Vec<Clause>> {
    let mut clauses: Vec<Clause> = Vec::new();
    let mut add = |clause: Clause| match clauses
        .iter_mut()
        .find(|c| c.field == clause.field && c.op == clause.op)
    {
        Some(same) => {
            for v in clause.values {
                if !same.values.contains(&v) {
                    same.values.push(v);
                }
            }
        }
        None => clauses.push(clause),
    };
    match expr {
        Expr::Or(a, b) => {
            for side in [a, b] {
                for clause in disjunction(side, redefined)? {
                    add(clause);
                }
            }
        }
        other => {
            for clause in atom(other, redefined)? {
                add(clause);
            }
        }
    }
    Some(clauses)
}

/// An event field the host can see: not `_time`, not computed by `eval`.
fn raw_field<'e>(expr: &'e Expr, redefined: &BTreeSet<String>) -> Option<&'e str> {
    match expr {
        Expr::Field(name)
            if name != TIME_FIELD && !redefined.contains(name) && name != "@values" =>
        {
            Some(name)
        }
        _ => None,
    }
}

fn clause(field: &str, op: MatchOp, values: Vec<String>) -> Clause {
    Clause {
        field: field.to_owned(),
        op,
        values,
    }
}

/// The clauses for one condition (alternatives), if it can be pushed.
fn atom(expr: &Expr, redefined: &BTreeSet<String>) -> Option<Vec<Clause>> {
    match expr {
        Expr::Cmp { op, left, right } => {
            let (field, literal, op) = match (
                raw_field(left, redefined),
                &**right,
                raw_field(right, redefined),
                &**left,
            ) {
                (Some(f), Expr::Lit(v), _, _) => (f, v, *op),
                // `4688 == EventID`: equality is symmetric; the others are not.
                (_, _, Some(f), Expr::Lit(v)) if matches!(op, CmpOp::Eq | CmpOp::EqCs) => {
                    (f, v, *op)
                }
                _ => return None,
            };
            match op {
                CmpOp::Eq | CmpOp::EqCs => {
                    equality(field, literal, op == CmpOp::EqCs).map(|c| vec![c])
                }
                CmpOp::Contains { cs } => text_clause(field, MatchOp::Contains, literal, cs),
                CmpOp::StartsWith { cs } => text_clause(field, MatchOp::StartsWith, literal, cs),
                CmpOp::EndsWith { cs } => text_clause(field, MatchOp::EndsWith, literal, cs),
                _ => None,
            }
        }
        Expr::In { expr, values, cs } => {
            let field = raw_field(expr, redefined)?;
            let mut out: Vec<Clause> = Vec::new();
            for value in values {
                let c = equality(field, value, *cs)?;
                match out.iter_mut().find(|o| o.op == c.op) {
                    Some(same) => same.values.extend(c.values),
                    None => out.push(c),
                }
            }
            Some(out)
        }
        Expr::Matches { expr, pattern, .. } => {
            // The host's regex is case-insensitive: as loose as `matches_cs`.
            Some(vec![clause(
                raw_field(expr, redefined)?,
                MatchOp::Regex,
                vec![pattern.clone()],
            )])
        }
        Expr::Cidr { expr, net } => {
            let field = raw_field(expr, redefined)?;
            cidr_prefixes(net).map(|prefixes| vec![clause(field, MatchOp::StartsWith, prefixes)])
        }
        Expr::Call {
            func: Func::Exists,
            args,
        } => {
            let field = raw_field(args.first()?, redefined)?;
            Some(vec![clause(field, MatchOp::Exists, Vec::new())])
        }
        _ => None,
    }
}

/// Largest integer a number equality pushes down (below it, every
/// spelling the language reads as that number starts with its digits).
const MAX_PUSHED_INTEGER: f64 = 1e15;

fn equality(field: &str, literal: &Value, cs: bool) -> Option<Clause> {
    if let Some(n) = literal.as_number() {
        // Numbers compare by value: `4688`, `"4688"` and `4688.0` are equal,
        // and all start with the integer's digits (see `parse_number`).
        if n.fract() != 0.0 || n.abs() >= MAX_PUSHED_INTEGER {
            return None;
        }
        let digits = format_number(n);
        let values = if n == 0.0 {
            vec![digits, "-0".to_owned()]
        } else {
            vec![digits]
        };
        return Some(clause(field, MatchOp::StartsWith, values));
    }
    match literal {
        Value::Str(text) if cs || text.is_ascii() => {
            Some(clause(field, MatchOp::Equals, vec![text.clone()]))
        }
        Value::Bool(b) => Some(clause(field, MatchOp::Equals, vec![b.to_string()])),
        _ => None,
    }
}

/// A text operator: case-sensitive needles always (the host's ASCII
/// case-insensitive match is looser); case-insensitive ones only in ASCII,
/// where the host folds exactly as the language does.
fn text_clause(field: &str, op: MatchOp, literal: &Value, cs: bool) -> Option<Vec<Clause>> {
    let text = match literal {
        Value::Str(s) => s.clone(),
        Value::Num(n) => format_number(*n),
        _ => return None,
    };
    (cs || text.is_ascii()).then(|| vec![clause(field, op, vec![text])])
}

/// For an IPv4 network, the text prefixes every address in it starts with
/// (`10.` for `10.0.0.0/8`, `172.16.` to `172.31.` for `172.16.0.0/12`);
/// `None` for IPv6 (many spellings) or very short prefixes.
fn cidr_prefixes(net: &str) -> Option<Vec<String>> {
    let net = Net::parse(net).ok()?;
    let std::net::IpAddr::V4(addr) = net.addr else {
        return None;
    };
    let octets = addr.octets();
    let full = usize::from(net.prefix / 8);
    let rest = net.prefix % 8;
    if net.prefix == 32 {
        return Some(vec![addr.to_string()]);
    }
    if full == 0 && rest == 0 {
        return None;
    }
    let head: String = octets[..full].iter().map(|o| format!("{o}.")).collect();
    if rest == 0 {
        return Some(vec![head]);
    }
    let span = 1u16 << (8 - rest);
    let base = u16::from(octets[full]) & !(span - 1) & 0xff;
    // The last octet has no dot after it.
    let dot = if full < 3 { "." } else { "" };
    Some(
        (base..base + span)
            .map(|o| format!("{head}{o}{dot}"))
            .collect(),
    )
}
