//! A shard's [`Partial`] as the module contract's aggregates, and the merge
//! of all shards' aggregates back into one partial.
//!
//! The `query` module returns its partial through the contract's `finish`,
//! and the coordinator merges the partials of all tasks by aggregate name
//! with the contract's rules, without running guest code and without
//! knowing the query. So every part of a partial travels as an aggregate
//! whose contract merge is the query's merge:
//!
//! | part | aggregate | kind | key |
//! |---|---|---|---|
//! | the plan | `query:plan` | counts | the plan's fingerprint |
//! | rows (no aggregation) | `query:rows` | counts | the row as JSON; count = copies |
//! | rows were cut | `query:rows:truncated` | counts | `truncated` |
//! | events per group | `query:events` | counts | the group |
//! | `count` | `query:<i>:<name>` | counts | the group |
//! | `dc` | `query:<i>:<name>` | distinct | the group |
//! | `min`, `max` | `query:<i>:<name>` | range | the group |
//! | `sum`, `avg` | `query:<i>:<name>:sum` | counts | group, `\n`, limb |
//! | `values` | `query:<i>:<name>:values` | counts | group, `\n`, value |
//! | `values` cut | `query:<i>:<name>:values-cut` | counts | the group |
//! | `earliest`, `latest` | `query:<i>:<name>:first`/`:last` | counts | group, `\n`, time, `\n`, value |
//!
//! Group keys are JSON arrays, which never hold a raw newline, so `\n`
//! separates a key from what follows it. A sum is carried exactly: a
//! shard's fixed-point total goes, by sign, into four 32-bit limbs
//! (`+0`..`+3`, `-0`..`-3`) that counts add without carrying, so the
//! merged total is exact and independent of the merge order for up to
//! 2^32 shards. `values`, `earliest` and `latest` carry only what can be in
//! the final answer (a shard's first [`MAX_VALUES`](crate::MAX_VALUES)
//! values, its earliest or latest value per group), so they stay small.

use std::collections::BTreeMap;

use quarry_contract::aggregate::Merged;
use quarry_contract::{Aggregate, AggregateValue};

use crate::ast::{Agg, AggFunc, Stage};
use crate::error::Error;
use crate::exec::{AggPartial, Partial, PartialData, Row, TimedValue, ValuesState};
use crate::plan::Plan;

/// Prefix of every aggregate a query returns.
pub const PREFIX: &str = "query:";
const PLAN: &str = "query:plan";
const ROWS: &str = "query:rows";
const ROWS_CUT: &str = "query:rows:truncated";
const EVENTS: &str = "query:events";
const LIMBS: usize = 4;

fn agg_name(i: usize, agg: &Agg) -> String {
    format!("{PREFIX}{i}:{}", agg.name)
}

fn aggs_of(plan: &Plan) -> &[Agg] {
    match &plan.aggregation {
        Some(Stage::Stats { aggs, .. } | Stage::Timechart { aggs, .. }) => aggs,
        _ => &[],
    }
}

fn keyed(group: &str, rest: &str) -> String {
    format!("{group}\n{rest}")
}

fn counts(pairs: impl IntoIterator<Item = (String, u64)>) -> AggregateValue {
    AggregateValue::Counts(pairs.into_iter().collect())
}

impl Plan {
    /// The partial as contract aggregates, for a module's `finish`.
    pub fn partial_to_aggregates(&self, partial: &Partial) -> Vec<Aggregate> {
        let mut out = vec![Aggregate::new(PLAN, counts([(partial.plan.clone(), 1)]))];
        match &partial.data {
            PartialData::Rows { rows, truncated } => {
                let mut copies: BTreeMap<String, u64> = BTreeMap::new();
                for row in rows {
                    let text = serde_json::to_string(row).unwrap_or_default();
                    *copies.entry(text).or_insert(0) += 1;
                }
                out.push(Aggregate::new(ROWS, AggregateValue::Counts(copies)));
                if *truncated {
                    out.push(Aggregate::new(
                        ROWS_CUT,
                        counts([("truncated".to_owned(), 1)]),
                    ));
                }
            }
            PartialData::Groups(groups) => {
                out.push(Aggregate::new(EVENTS, groups.events.clone()));
                for (i, (state, agg)) in groups.aggs.iter().zip(aggs_of(self)).enumerate() {
                    carry_agg(&mut out, &agg_name(i, agg), state);
                }
            }
        }
        out
    }

    /// The merge of all tasks' aggregates (as the coordinator keeps them)
    /// as one partial of this plan. Aggregates not named `query:…` are
    /// ignored; no aggregates at all is the merge of no shards.
    pub fn partial_from_merged(&self, merged: &Merged) -> Result<Partial, Error> {
        let mut partial = self.empty_partial();
        let Some(plan) = merged.get(PLAN) else {
            if merged.keys().any(|k| k.starts_with(PREFIX)) {
                return Err(Error::Merge(format!(
                    "the results carry query aggregates but no `{PLAN}`"
                )));
            }
            return Ok(partial);
        };
        let fingerprints = counts_of(PLAN, Some(plan))?;
        if let Some(other) = fingerprints.keys().find(|k| **k != partial.plan) {
            return Err(Error::Merge(format!(
                "the results were computed by plan {other}, not by this query's plan {}; \
                 were they made by another query or another version of Quarry?",
                partial.plan
            )));
        }
        match &mut partial.data {
            PartialData::Rows { rows, truncated } => {
                for (text, copies) in counts_of(ROWS, merged.get(ROWS))? {
                    let row: Row = serde_json::from_str(text).map_err(|e| {
                        Error::Merge(format!("a row of `{ROWS}` is not a row ({e}): {text}"))
                    })?;
                    for _ in 1..*copies {
                        rows.push(row.clone());
                    }
                    rows.push(row);
                }
                *truncated = merged.contains_key(ROWS_CUT);
                self.bound_merged_rows(rows, truncated);
            }
            PartialData::Groups(groups) => {
                groups.events = match merged.get(EVENTS) {
                    Some(v @ AggregateValue::Counts(_)) => v.clone(),
                    None => AggregateValue::Counts(BTreeMap::new()),
                    Some(other) => return Err(kind(EVENTS, "counts", other)),
                };
                let aggs = aggs_of(self);
                for (i, (state, agg)) in groups.aggs.iter_mut().zip(aggs).enumerate() {
                    restore_agg(merged, &agg_name(i, agg), agg.func, state)?;
                }
            }
        }
        Ok(partial)
    }
}

fn carry_agg(out: &mut Vec<Aggregate>, name: &str, state: &AggPartial) {
    match state {
        AggPartial::Count(v) | AggPartial::Dc(v) | AggPartial::Range(v) => {
            out.push(Aggregate::new(name, v.clone()));
        }
        AggPartial::Sum(sums) => {
            let mut pairs = Vec::new();
            for (group, sum) in sums {
                pairs.push((keyed(group, "n"), sum.count));
                if sum.overflow {
                    pairs.push((keyed(group, "overflow"), 1));
                }
                let sign = if sum.fixed < 0 { '-' } else { '+' };
                let mut magnitude = sum.fixed.unsigned_abs();
                for limb in 0..LIMBS {
                    let part = (magnitude & 0xffff_ffff) as u64;
                    magnitude >>= 32;
                    if part != 0 {
                        pairs.push((keyed(group, &format!("{sign}{limb}")), part));
                    }
                }
            }
            out.push(Aggregate::new(format!("{name}:sum"), counts(pairs)));
        }
        AggPartial::Values(values) => {
            let kept = values
                .iter()
                .flat_map(|(group, state)| state.values.iter().map(move |v| (keyed(group, v), 1)));
            out.push(Aggregate::new(format!("{name}:values"), counts(kept)));
            let cut = values
                .iter()
                .filter(|(_, state)| state.truncated)
                .map(|(group, _)| (group.clone(), 1));
            out.push(Aggregate::new(format!("{name}:values-cut"), counts(cut)));
        }
        AggPartial::Earliest(firsts) | AggPartial::Latest(firsts) => {
            let suffix = if matches!(state, AggPartial::Earliest(_)) {
                "first"
            } else {
                "last"
            };
            let pairs = firsts
                .iter()
                .map(|(group, t)| (keyed(group, &format!("{}\n{}", t.time, t.value)), 1));
            out.push(Aggregate::new(format!("{name}:{suffix}"), counts(pairs)));
        }
    }
}

fn restore_agg(
    merged: &Merged,
    name: &str,
    func: AggFunc,
    state: &mut AggPartial,
) -> Result<(), Error> {
    match state {
        AggPartial::Count(v) | AggPartial::Dc(v) | AggPartial::Range(v) => {
            if let Some(found) = merged.get(name) {
                if found.kind() != v.kind() {
                    return Err(kind(name, v.kind(), found));
                }
                *v = found.clone();
            }
        }
        AggPartial::Sum(sums) => {
            let name = format!("{name}:sum");
            let mut limbs: BTreeMap<&str, ([u128; LIMBS], [u128; LIMBS])> = BTreeMap::new();
            for (key, n) in counts_of(&name, merged.get(&name))? {
                let (group, part) = split(&name, key)?;
                let sum = sums.entry(group.to_owned()).or_default();
                let (pos, neg) = limbs.entry(group).or_default();
                match part {
                    "n" => sum.count = *n,
                    "overflow" => sum.overflow = true,
                    _ => {
                        let (sign, limb) = part.split_at(1);
                        let limb: usize =
                            limb.parse().ok().filter(|l| *l < LIMBS).ok_or_else(|| {
                                Error::Merge(format!("`{name}` has a bad key {key:?}"))
                            })?;
                        let side = if sign == "-" { &mut *neg } else { &mut *pos };
                        side[limb] = u128::from(*n);
                    }
                }
            }
            for (group, (pos, neg)) in limbs {
                let sum = sums.entry(group.to_owned()).or_default();
                match (join_limbs(&pos), join_limbs(&neg)) {
                    (Some(p), Some(n)) => match p.checked_sub(n) {
                        Some(fixed) => sum.fixed = fixed,
                        None => sum.overflow = true,
                    },
                    _ => sum.overflow = true,
                }
            }
        }
        AggPartial::Values(values) => {
            let kept = format!("{name}:values");
            for key in counts_of(&kept, merged.get(&kept))?.keys() {
                let (group, value) = split(&kept, key)?;
                let state: &mut ValuesState = values.entry(group.to_owned()).or_default();
                state.values.insert(value.to_owned());
            }
            let cut = format!("{name}:values-cut");
            for group in counts_of(&cut, merged.get(&cut))?.keys() {
                values.entry(group.clone()).or_default().truncated = true;
            }
            for state in values.values_mut() {
                state.bound();
            }
        }
        AggPartial::Earliest(firsts) | AggPartial::Latest(firsts) => {
            let earliest = func == AggFunc::Earliest;
            let name = format!("{name}:{}", if earliest { "first" } else { "last" });
            for key in counts_of(&name, merged.get(&name))?.keys() {
                let (group, rest) = split(&name, key)?;
                let (time, value) = split(&name, rest)?;
                let time: i64 = time
                    .parse()
                    .map_err(|_| Error::Merge(format!("`{name}` has a bad time in {key:?}")))?;
                let seen = TimedValue {
                    time,
                    value: value.to_owned(),
                };
                match firsts.get_mut(group) {
                    Some(kept) if (earliest && seen < *kept) || (!earliest && seen > *kept) => {
                        *kept = seen
                    }
                    Some(_) => {}
                    None => {
                        firsts.insert(group.to_owned(), seen);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Limbs of 32 bits, each possibly grown past 32 bits by the merge's adds,
/// summed back into one magnitude.
fn join_limbs(limbs: &[u128; LIMBS]) -> Option<i128> {
    let mut total: u128 = 0;
    for (i, limb) in limbs.iter().enumerate() {
        let shifted = limb.checked_shl(32 * i as u32)?;
        if i > 0 && shifted >> (32 * i) != *limb {
            return None;
        }
        total = total.checked_add(shifted)?;
    }
    i128::try_from(total).ok()
}

fn split<'k>(name: &str, key: &'k str) -> Result<(&'k str, &'k str), Error> {
    key.split_once('\n')
        .ok_or_else(|| Error::Merge(format!("`{name}` has a key without a part: {key:?}")))
}

fn counts_of<'m>(
    name: &str,
    value: Option<&'m AggregateValue>,
) -> Result<&'m BTreeMap<String, u64>, Error> {
    static EMPTY: BTreeMap<String, u64> = BTreeMap::new();
    match value {
        None => Ok(&EMPTY),
        Some(AggregateValue::Counts(c)) => Ok(c),
        Some(other) => Err(kind(name, "counts", other)),
    }
}

fn kind(name: &str, want: &str, found: &AggregateValue) -> Error {
    Error::Merge(format!(
        "aggregate `{name}` is of kind `{}`, not `{want}`",
        found.kind()
    ))
}
