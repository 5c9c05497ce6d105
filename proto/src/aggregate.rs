//! Aggregates between their protobuf form ([`v1::Aggregate`]) and the form
//! their merge rules work on ([`quarry_contract::Aggregate`]).

use quarry_contract::aggregate::{
    Aggregate, AggregateValue, DistinctValues, Parts, RangeStats, StackEntry,
};

use crate::v1;
use crate::v1::aggregate::Value;

/// The full protobuf form of `aggregate`, as a worker reports a partial.
pub fn to_proto(aggregate: &Aggregate) -> v1::Aggregate {
    encode(&aggregate.name, &aggregate.value, Form::Full)
}

/// The summary a hunt shows of a merged aggregate: a stack lists only its
/// rare values (with the number of common ones), a distinct set its counts
/// without sketches, a top-k its `k` heaviest keys.
pub fn summary(name: &str, value: &AggregateValue) -> v1::Aggregate {
    encode(name, value, Form::Summary)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Full,
    Summary,
}

fn encode(name: &str, value: &AggregateValue, form: Form) -> v1::Aggregate {
    let mut out = v1::Aggregate {
        name: name.to_owned(),
        ..Default::default()
    };
    let summary = form == Form::Summary;
    match value.parts() {
        Parts::Counts(counts) => {
            out.counts = counts.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
        }
        Parts::Distinct(keys) => {
            let keys = keys
                .into_iter()
                .map(|(key, values)| {
                    let mut proto = v1::DistinctKey {
                        key: key.to_owned(),
                        exact: values.is_exact(),
                        count: values.count(),
                        ..Default::default()
                    };
                    match values {
                        DistinctValues::Exact(values) => {
                            proto.values = values.iter().cloned().collect()
                        }
                        DistinctValues::Sketch(sketch) if !summary => {
                            proto.sketch = sketch.registers().to_vec();
                        }
                        DistinctValues::Sketch(_) => {}
                    }
                    proto
                })
                .collect();
            out.value = Some(Value::Distinct(v1::DistinctAggregate { keys }));
        }
        Parts::TopK(top) => {
            let entries = if summary {
                top.top()
            } else {
                top.entries
                    .iter()
                    .map(|(key, entry)| (key.as_str(), *entry))
                    .collect()
            };
            out.value = Some(Value::TopK(v1::TopKAggregate {
                k: top.k,
                entries: entries
                    .into_iter()
                    .map(|(key, entry)| v1::TopEntry {
                        key: key.to_owned(),
                        count: entry.count,
                        error: entry.error,
                    })
                    .collect(),
                floor: top.floor,
            }));
        }
        Parts::Range(keys) => {
            out.value = Some(Value::Range(v1::RangeAggregate {
                keys: keys
                    .into_iter()
                    .map(|(key, stats)| v1::RangeKey {
                        key: key.to_owned(),
                        min: stats.min,
                        max: stats.max,
                        count: stats.count,
                    })
                    .collect(),
            }));
        }
        Parts::Stack(stack) => {
            let listed: Vec<(&str, &StackEntry)> = if summary {
                stack.rare()
            } else {
                stack
                    .entries
                    .iter()
                    .map(|(value, entry)| (value.as_str(), entry))
                    .collect()
            };
            out.value = Some(Value::Stack(v1::StackAggregate {
                max_hosts: stack.max_hosts,
                values: listed
                    .into_iter()
                    .map(|(value, entry)| v1::StackValue {
                        value: value.to_owned(),
                        hosts: entry.hosts.iter().cloned().collect(),
                        common: entry.common,
                        events: entry.events,
                    })
                    .collect(),
                common_values: stack.common_values() as u64,
            }));
        }
    }
    out
}

/// Decodes a partial aggregate a worker reported, checked and normalised by
/// the merge rules; the error names the aggregate and what is wrong.
pub fn from_proto(aggregate: v1::Aggregate) -> Result<Aggregate, String> {
    let name = aggregate.name;
    let malformed = |reason: String| format!("aggregate `{name}`: {reason}");
    let mut value = match aggregate.value {
        None => AggregateValue::counts_from(aggregate.counts),
        Some(Value::Distinct(distinct)) => {
            let mut keys = Vec::with_capacity(distinct.keys.len());
            for key in distinct.keys {
                let values = if key.exact {
                    DistinctValues::exact(key.values)
                } else {
                    DistinctValues::sketch(key.sketch).map_err(malformed)?
                };
                keys.push((key.key, values));
            }
            AggregateValue::distinct_from(keys)
        }
        Some(Value::TopK(top)) => AggregateValue::top_k_from(
            top.k,
            top.floor,
            top.entries.into_iter().map(|e| (e.key, e.count, e.error)),
        ),
        Some(Value::Range(range)) => AggregateValue::ranges_from(range.keys.into_iter().map(|k| {
            let stats = RangeStats {
                min: k.min,
                max: k.max,
                count: k.count,
            };
            (k.key, stats)
        })),
        Some(Value::Stack(stack)) => AggregateValue::stack_from(
            stack.max_hosts,
            stack.values.into_iter().map(|v| {
                let entry = StackEntry {
                    hosts: v.hosts.into_iter().collect(),
                    common: v.common,
                    events: v.events,
                };
                (v.value, entry)
            }),
        ),
    };
    value.normalise().map_err(malformed)?;
    Ok(Aggregate::new(name, value))
}

/// A stack's rare values from its summary: `(value, hosts)`, fewest hosts
/// first, as the coordinator listed them.
pub fn rare_values(aggregate: &v1::Aggregate) -> Option<Vec<(&str, Vec<&str>)>> {
    match &aggregate.value {
        Some(Value::Stack(stack)) => Some(
            stack
                .values
                .iter()
                .filter(|v| !v.common)
                .map(|v| {
                    (
                        v.value.as_str(),
                        v.hosts.iter().map(String::as_str).collect(),
                    )
                })
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_contract::aggregate::{Merged, Stack, TopK, merge_into};

    fn samples() -> Vec<Aggregate> {
        let mut distinct = DistinctValues::default();
        for i in 0..1_200 {
            distinct.insert(&format!("v{i}"));
        }
        let mut top = TopK::new(2);
        for i in 0..30u64 {
            top.add(&format!("k{i}"), i);
        }
        top.truncate();
        let mut stack = Stack::new(1);
        stack.observe("rare", "h1");
        stack.observe("common", "h1");
        stack.observe("common", "h2");
        vec![
            Aggregate::new("c", AggregateValue::counts_from([("a".to_owned(), 2)])),
            Aggregate::new(
                "d",
                AggregateValue::distinct_from([
                    ("big".to_owned(), distinct),
                    ("small".to_owned(), DistinctValues::exact(["x".to_owned()])),
                ]),
            ),
            Aggregate::new("t", AggregateValue::TopK(top)),
            Aggregate::new(
                "r",
                AggregateValue::ranges_from([("h".to_owned(), RangeStats::of(7))]),
            ),
            Aggregate::new("s", AggregateValue::Stack(stack)),
        ]
    }

    #[test]
    fn partials_round_trip_exactly() {
        for aggregate in samples() {
            assert_eq!(from_proto(to_proto(&aggregate)).unwrap(), aggregate);
        }
    }

    #[test]
    fn summaries_list_what_a_hunter_reads() {
        let mut merged = Merged::new();
        for aggregate in samples() {
            merge_into(&mut merged, aggregate).unwrap();
        }
        let stack = summary("s", &merged["s"]);
        assert_eq!(rare_values(&stack).unwrap(), [("rare", vec!["h1"])]);
        let Some(Value::Stack(proto)) = &stack.value else {
            panic!("a stack")
        };
        assert_eq!(proto.common_values, 1);
        let Some(Value::Distinct(distinct)) = summary("d", &merged["d"]).value else {
            panic!("distinct")
        };
        assert!(distinct.keys.iter().all(|k| k.sketch.is_empty()));
        assert!(!distinct.keys[0].exact && (distinct.keys[0].count as i64 - 1_200).abs() < 60);
        let Some(Value::TopK(top)) = summary("t", &merged["t"]).value else {
            panic!("top-k")
        };
        assert_eq!(
            top.entries
                .iter()
                .map(|e| e.key.as_str())
                .collect::<Vec<_>>(),
            ["k29", "k28"]
        );
    }

    #[test]
    fn malformed_partials_are_refused_with_the_name() {
        let bad = v1::Aggregate {
            name: "d".into(),
            value: Some(Value::Distinct(v1::DistinctAggregate {
                keys: vec![v1::DistinctKey {
                    key: "k".into(),
                    sketch: vec![0; 3],
                    ..Default::default()
                }],
            })),
            ..Default::default()
        };
        assert!(
            from_proto(bad)
                .unwrap_err()
                .starts_with("aggregate `d`: a distinct-count sketch has 4096")
        );
        let bad = v1::Aggregate {
            name: "t".into(),
            value: Some(Value::TopK(v1::TopKAggregate::default())),
            ..Default::default()
        };
        assert!(from_proto(bad).unwrap_err().contains("k from 1"));
    }
}
