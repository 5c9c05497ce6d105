//! The parsed query: stages and expressions. Serialisable, since a compiled
//! plan carries them to the workers and the coordinator.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// A compiled regular expression beside its pattern in the plan: built once
/// per process, never serialised; all cells compare equal.
#[derive(Clone, Debug, Default)]
pub struct RegexCell(pub(crate) std::sync::OnceLock<Option<regex::Regex>>);

impl PartialEq for RegexCell {
    fn eq(&self, _: &RegexCell) -> bool {
        true
    }
}

/// Largest compiled pattern, as the host prefilter allows; bounds the
/// memory one query can take in a worker.
pub const MAX_REGEX_BYTES: usize = 1 << 20;

/// Compiles a `matches` pattern: unanchored, case-insensitive unless `cs`.
pub fn build_regex(pattern: &str, cs: bool) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(!cs)
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| e.to_string())
}

impl RegexCell {
    /// The compiled pattern; `None` when it does not compile (refused
    /// earlier by the parser and by `Plan::from_json`).
    pub fn get(&self, pattern: &str, cs: bool) -> Option<&regex::Regex> {
        self.0
            .get_or_init(|| build_regex(pattern, cs).ok())
            .as_ref()
    }
}

/// The pseudo-field holding the event's time, in milliseconds since the
/// Unix epoch. Not projected from the event: the host hands it over apart.
pub const TIME_FIELD: &str = "_time";

/// An expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// A field (or a column computed by `eval` or an aggregation).
    Field(String),
    /// Logical negation.
    Not(Box<Expr>),
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// One holds.
    Or(Box<Expr>, Box<Expr>),
    /// A comparison.
    Cmp {
        /// The operator.
        op: CmpOp,
        /// Left side.
        left: Box<Expr>,
        /// Right side.
        right: Box<Expr>,
    },
    /// `expr in (values...)`.
    In {
        /// Tested value.
        expr: Box<Expr>,
        /// Candidates.
        values: Vec<Value>,
        /// Case-sensitive (`in_cs`).
        cs: bool,
    },
    /// `expr matches "regex"`.
    Matches {
        /// Tested value.
        expr: Box<Expr>,
        /// The pattern (Rust `regex` syntax, unanchored).
        pattern: String,
        /// Case-sensitive (`matches_cs`).
        cs: bool,
        /// The compiled pattern, built on first use.
        #[serde(skip)]
        regex: RegexCell,
    },
    /// `cidr(expr, "net")` or `expr cidr "net"`.
    Cidr {
        /// Tested value.
        expr: Box<Expr>,
        /// The network, as written (`10.0.0.0/8`).
        net: String,
    },
    /// Arithmetic.
    Arith {
        /// The operator.
        op: ArithOp,
        /// Left side.
        left: Box<Expr>,
        /// Right side.
        right: Box<Expr>,
    },
    /// Text concatenation (`||`).
    Concat(Box<Expr>, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// A function call.
    Call {
        /// The function.
        func: Func,
        /// Its arguments.
        args: Vec<Expr>,
    },
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `==`, case-insensitive.
    Eq,
    /// `!=`, case-insensitive.
    Ne,
    /// `===`, case-sensitive.
    EqCs,
    /// `!==`, case-sensitive.
    NeCs,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `contains` / `contains_cs`.
    Contains {
        /// Case-sensitive.
        cs: bool,
    },
    /// `startswith` / `startswith_cs`.
    StartsWith {
        /// Case-sensitive.
        cs: bool,
    },
    /// `endswith` / `endswith_cs`.
    EndsWith {
        /// Case-sensitive.
        cs: bool,
    },
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArithOp {
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Rem,
}

/// Functions of `where` and `eval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Func {
    /// `lower(x)`.
    Lower,
    /// `upper(x)`.
    Upper,
    /// `len(x)`: characters of the text.
    Len,
    /// `base64decode(x)`: the decoded bytes as text (UTF-8, or UTF-16LE as
    /// PowerShell's `-EncodedCommand`); null when not base64.
    Base64Decode,
    /// `entropy(x)`: Shannon entropy of the text's characters, in bits.
    Entropy,
    /// `coalesce(a, b, ...)`: the first non-null, non-empty argument.
    Coalesce,
    /// `if(cond, then, else)`.
    If,
    /// `exists(x)`: present and non-empty.
    Exists,
    /// `isnull(x)`: missing or null.
    IsNull,
    /// `tonumber(x)`: the number, or null.
    ToNumber,
    /// `tostring(x)`: the text.
    ToString,
    /// `cidr(x, "net")`: only as a `where` condition (parsed into
    /// [`Expr::Cidr`]).
    Cidr,
}

impl Func {
    /// Every function, by name, with its argument count (min, max).
    pub(crate) const ALL: [(&'static str, Func, usize, usize); 12] = [
        ("lower", Func::Lower, 1, 1),
        ("upper", Func::Upper, 1, 1),
        ("len", Func::Len, 1, 1),
        ("base64decode", Func::Base64Decode, 1, 1),
        ("entropy", Func::Entropy, 1, 1),
        ("coalesce", Func::Coalesce, 1, 64),
        ("if", Func::If, 3, 3),
        ("exists", Func::Exists, 1, 1),
        ("isnull", Func::IsNull, 1, 1),
        ("tonumber", Func::ToNumber, 1, 1),
        ("tostring", Func::ToString, 1, 1),
        ("cidr", Func::Cidr, 2, 2),
    ];
}

/// Aggregate functions of `stats` and `timechart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunc {
    /// `count()` events, or `count(f)` events where `f` exists.
    Count,
    /// `dc(f)`: distinct values (exact to 1,000, then a HyperLogLog).
    Dc,
    /// `sum(f)` of numeric values.
    Sum,
    /// `avg(f)` of numeric values.
    Avg,
    /// `min(f)` of numeric values.
    Min,
    /// `max(f)` of numeric values.
    Max,
    /// `values(f)`: distinct values, the first 100 in order.
    Values,
    /// `earliest(f)`: the value at the earliest event time.
    Earliest,
    /// `latest(f)`: the value at the latest event time.
    Latest,
}

impl AggFunc {
    pub(crate) const ALL: [(&'static str, AggFunc); 9] = [
        ("count", AggFunc::Count),
        ("dc", AggFunc::Dc),
        ("sum", AggFunc::Sum),
        ("avg", AggFunc::Avg),
        ("min", AggFunc::Min),
        ("max", AggFunc::Max),
        ("values", AggFunc::Values),
        ("earliest", AggFunc::Earliest),
        ("latest", AggFunc::Latest),
    ];

    /// The function's name in the language.
    pub fn name(self) -> &'static str {
        AggFunc::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }
}

/// One aggregate of a `stats` or `timechart`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    /// The function.
    pub func: AggFunc,
    /// Its field (`None` only for `count()`).
    pub field: Option<String>,
    /// The result column: the `as` alias, else `count` or `func(field)`.
    pub name: String,
}

/// One key of a `sort`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    /// The column.
    pub field: String,
    /// Descending (`-field`).
    pub desc: bool,
}

/// One stage of the pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Keeps rows for which the condition holds.
    Where(Expr),
    /// Keeps only these columns, in this order.
    Fields(Vec<String>),
    /// Computes columns, left to right.
    Eval(Vec<(String, Expr)>),
    /// Aggregates by groups.
    Stats {
        /// The aggregates.
        aggs: Vec<Agg>,
        /// Group fields.
        by: Vec<String>,
    },
    /// The `n` most (or least, `rare`) frequent values of `field`.
    Top {
        /// How many values (per `by` group).
        n: usize,
        /// The field.
        field: String,
        /// Group fields.
        by: Vec<String>,
        /// `rare`: least frequent first.
        rare: bool,
    },
    /// Aggregates per time bucket, one column per aggregate (or per value
    /// of `by`).
    Timechart {
        /// Bucket width in milliseconds.
        span_ms: i64,
        /// The aggregates.
        aggs: Vec<Agg>,
        /// Split field.
        by: Option<String>,
    },
    /// Orders rows.
    Sort(Vec<SortKey>),
    /// Keeps the first `n` rows.
    Head(usize),
    /// Keeps the first row of each combination of these fields.
    Dedup(Vec<String>),
}

impl Stage {
    /// Whether the stage aggregates (ends the per-event part).
    pub fn is_aggregation(&self) -> bool {
        matches!(
            self,
            Stage::Stats { .. } | Stage::Top { .. } | Stage::Timechart { .. }
        )
    }

    /// Whether the stage looks at one event at a time.
    pub fn is_per_event(&self) -> bool {
        matches!(self, Stage::Where(_) | Stage::Fields(_) | Stage::Eval(_))
    }
}

impl Expr {
    /// Every field the expression reads, in order of appearance.
    pub fn fields(&self, out: &mut Vec<String>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Field(name) => out.push(name.clone()),
            Expr::Not(e) | Expr::Neg(e) => e.fields(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Concat(a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Expr::Cmp { left, right, .. } | Expr::Arith { left, right, .. } => {
                left.fields(out);
                right.fields(out);
            }
            Expr::In { expr, .. } | Expr::Matches { expr, .. } | Expr::Cidr { expr, .. } => {
                expr.fields(out)
            }
            Expr::Call { args, .. } => args.iter().for_each(|a| a.fields(out)),
        }
    }
}
