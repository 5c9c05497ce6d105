//! Recursive-descent parser from tokens to [`Stage`]s.

use crate::ast::{Agg, AggFunc, ArithOp, CmpOp, Expr, Func, SortKey, Stage};
use crate::error::Error;
use crate::lexer::{Tok, Token, lex};
use crate::value::Value;

/// Default `N` of `top`, `rare` and `head`.
pub const DEFAULT_N: usize = 10;

const STAGES: [&str; 11] = [
    "where",
    "fields",
    "eval",
    "stats",
    "top",
    "rare",
    "timechart",
    "sort",
    "head",
    "dedup",
    "search",
];

/// Words that end an expression rather than continue it.
const KEYWORDS: [&str; 5] = ["and", "or", "not", "by", "as"];

const WORD_OPS: [(&str, CmpOp); 6] = [
    ("contains", CmpOp::Contains { cs: false }),
    ("contains_cs", CmpOp::Contains { cs: true }),
    ("startswith", CmpOp::StartsWith { cs: false }),
    ("startswith_cs", CmpOp::StartsWith { cs: true }),
    ("endswith", CmpOp::EndsWith { cs: false }),
    ("endswith_cs", CmpOp::EndsWith { cs: true }),
];

/// Parses a query into its stages, each with the byte offset of its
/// keyword (for errors found later).
pub fn parse(query: &str) -> Result<Vec<(usize, Stage)>, Error> {
    let tokens = lex(query)?;
    let mut parser = Parser {
        query,
        tokens,
        pos: 0,
    };
    let mut stages = Vec::new();
    loop {
        let at = parser.at();
        stages.push((at, parser.stage()?));
        match parser.peek() {
            Tok::Sym("|") => parser.pos += 1,
            Tok::End => break,
            other => {
                let other = other.describe();
                return Err(parser.error(
                    format!("unexpected {other} after the stage"),
                    Some("separate stages with `|`".to_owned()),
                ));
            }
        }
    }
    Ok(stages)
}

struct Parser<'q> {
    query: &'q str,
    tokens: Vec<Token>,
    pos: usize,
}

/// The closest of `candidates` to `word`, if close enough to suggest.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len().div_ceil(3)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos.min(self.tokens.len() - 1)].tok
    }

    fn at(&self) -> usize {
        self.tokens[self.pos.min(self.tokens.len() - 1)].at
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn error(&self, message: impl Into<String>, hint: Option<String>) -> Error {
        Error::parse(self.query, self.at(), message, hint)
    }

    fn error_at(&self, at: usize, message: impl Into<String>, hint: Option<String>) -> Error {
        Error::parse(self.query, at, message, hint)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w.eq_ignore_ascii_case(word))
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.is_word(word);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        let found = matches!(self.peek(), Tok::Sym(s) if *s == sym);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_sym(&mut self, sym: &str, context: &str) -> Result<(), Error> {
        if self.eat_sym(sym) {
            return Ok(());
        }
        let found = self.peek().describe();
        Err(self.error(format!("expected `{sym}` {context}, found {found}"), None))
    }

    fn stage(&mut self) -> Result<Stage, Error> {
        let at = self.at();
        let name = match self.next() {
            Tok::Ident(name) => name.to_ascii_lowercase(),
            other => {
                let hint = matches!(other, Tok::End)
                    .then(|| "a `|` must be followed by a stage".to_owned());
                return Err(self.error_at(
                    at,
                    format!(
                        "expected a stage (where, stats, ...), found {}",
                        other.describe()
                    ),
                    hint.or_else(|| Some(format!("stages are: {}", STAGES[..10].join(", ")))),
                ));
            }
        };
        match name.as_str() {
            // `search` as a synonym of `where`, for SPL habits.
            "where" | "search" => Ok(Stage::Where(self.expr()?)),
            "fields" => Ok(Stage::Fields(self.field_list("`fields`")?)),
            "eval" => self.eval(),
            "stats" => {
                let aggs = self.aggs()?;
                let by = if self.eat_word("by") {
                    self.field_list("`by`")?
                } else {
                    Vec::new()
                };
                Ok(Stage::Stats { aggs, by })
            }
            "top" | "rare" => {
                let n = self.optional_count(&name)?;
                let field = self.field("`top`/`rare`")?;
                let by = if self.eat_word("by") {
                    self.field_list("`by`")?
                } else {
                    Vec::new()
                };
                Ok(Stage::Top {
                    n,
                    field,
                    by,
                    rare: name == "rare",
                })
            }
            "timechart" => self.timechart(),
            "sort" => {
                let mut keys = Vec::new();
                loop {
                    let desc = self.eat_sym("-");
                    if !desc {
                        self.eat_sym("+");
                    }
                    keys.push(SortKey {
                        field: self.field("`sort`")?,
                        desc,
                    });
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                Ok(Stage::Sort(keys))
            }
            "head" => Ok(Stage::Head(self.optional_count("head")?)),
            "dedup" => Ok(Stage::Dedup(self.field_list("`dedup`")?)),
            other => {
                let hint = closest(other, STAGES[..10].iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some(format!("stages are: {}", STAGES[..10].join(", "))));
                Err(self.error_at(at, format!("unknown stage `{other}`"), hint))
            }
        }
    }

    fn optional_count(&mut self, stage: &str) -> Result<usize, Error> {
        match self.peek().clone() {
            Tok::Num(n, text) => {
                if n.fract() != 0.0 || !(1.0..=1_000_000.0).contains(&n) {
                    return Err(self.error(
                        format!("`{stage}` needs a whole number from 1 to 1000000, got {text}"),
                        None,
                    ));
                }
                self.pos += 1;
                Ok(n as usize)
            }
            _ => Ok(DEFAULT_N),
        }
    }

    fn field(&mut self, context: &str) -> Result<String, Error> {
        match self.peek().clone() {
            Tok::Ident(name) if !KEYWORDS.contains(&name.to_ascii_lowercase().as_str()) => {
                self.pos += 1;
                Ok(name)
            }
            Tok::Quoted(name) | Tok::Str(name) if !name.is_empty() => {
                self.pos += 1;
                Ok(name)
            }
            other => Err(self.error(
                format!(
                    "expected a field name after {context}, found {}",
                    other.describe()
                ),
                Some("quote names with spaces or dots in backquotes: `Process Name`".to_owned()),
            )),
        }
    }

    fn field_list(&mut self, context: &str) -> Result<Vec<String>, Error> {
        let mut fields = vec![self.field(context)?];
        while self.eat_sym(",") {
            fields.push(self.field(context)?);
        }
        Ok(fields)
    }

    fn eval(&mut self) -> Result<Stage, Error> {
        let mut assignments = Vec::new();
        loop {
            let name = self.field("`eval`")?;
            if !self.eat_sym("=") {
                let found = self.peek().describe();
                let hint = matches!(self.peek(), Tok::Sym("=="))
                    .then(|| "`eval` assigns with a single `=`".to_owned());
                return Err(self.error(
                    format!("expected `=` after `eval {name}`, found {found}"),
                    hint,
                ));
            }
            assignments.push((name, self.expr()?));
            if !self.eat_sym(",") {
                break;
            }
        }
        Ok(Stage::Eval(assignments))
    }

    fn aggs(&mut self) -> Result<Vec<Agg>, Error> {
        let mut aggs = vec![self.agg()?];
        while self.eat_sym(",") {
            aggs.push(self.agg()?);
        }
        Ok(aggs)
    }

    fn agg(&mut self) -> Result<Agg, Error> {
        let at = self.at();
        let Tok::Ident(name) = self.next() else {
            return Err(self.error_at(
                at,
                "expected an aggregate such as `count()` or `dc(field)`",
                Some(format!("aggregates are: {}", agg_names())),
            ));
        };
        let lower = name.to_ascii_lowercase();
        let Some(&(_, func)) = AggFunc::ALL.iter().find(|(n, _)| *n == lower) else {
            let hint = closest(&lower, AggFunc::ALL.iter().map(|(n, _)| *n))
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("aggregates are: {}", agg_names()));
            return Err(self.error_at(at, format!("unknown aggregate `{name}`"), Some(hint)));
        };
        if !self.eat_sym("(") {
            // `stats count by x`, as SPL allows, for count only.
            if func != AggFunc::Count {
                return Err(self.error(
                    format!("expected `(` after `{lower}`"),
                    Some(format!("write `{lower}(field)`")),
                ));
            }
            return self.alias(Agg {
                func,
                field: None,
                name: "count".to_owned(),
            });
        }
        let field = if self.eat_sym(")") {
            None
        } else {
            let field = self.field(&format!("`{lower}(`"))?;
            self.expect_sym(")", &format!("to close `{lower}(`"))?;
            Some(field)
        };
        if field.is_none() && func != AggFunc::Count {
            return Err(self.error_at(
                at,
                format!("`{lower}()` needs a field"),
                Some(format!("write `{lower}(field)`")),
            ));
        }
        let name = match &field {
            None => "count".to_owned(),
            Some(f) => format!("{lower}({f})"),
        };
        self.alias(Agg { func, field, name })
    }

    fn alias(&mut self, mut agg: Agg) -> Result<Agg, Error> {
        if self.eat_word("as") {
            agg.name = self.field("`as`")?;
        }
        Ok(agg)
    }

    fn timechart(&mut self) -> Result<Stage, Error> {
        let mut span_ms = 3_600_000;
        if self.eat_word("span") {
            self.expect_sym("=", "after `span`")?;
            let at = self.at();
            let amount = match self.next() {
                Tok::Num(n, _) if n >= 1.0 && n.fract() == 0.0 => n as i64,
                _ => {
                    return Err(self.error_at(
                        at,
                        "expected a span such as `1h`",
                        Some("units: ms, s, m, h, d, w".to_owned()),
                    ));
                }
            };
            let unit = match self.peek() {
                Tok::Ident(u) if self.tokens[self.pos].at == self.tokens[self.pos - 1].end => {
                    u.to_ascii_lowercase()
                }
                _ => {
                    return Err(self.error(
                        "expected a unit right after the span's number",
                        Some("units: ms, s, m, h, d, w".to_owned()),
                    ));
                }
            };
            let unit_ms = match unit.as_str() {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                other => {
                    return Err(self.error(
                        format!("unknown span unit `{other}`"),
                        Some("units: ms, s, m, h, d, w".to_owned()),
                    ));
                }
            };
            self.pos += 1;
            span_ms = amount.saturating_mul(unit_ms);
        }
        let aggs = self.aggs()?;
        let by = if self.eat_word("by") {
            Some(self.field("`by`")?)
        } else {
            None
        };
        Ok(Stage::Timechart { span_ms, aggs, by })
    }

    // ---- expressions ----

    fn expr(&mut self) -> Result<Expr, Error> {
        let mut left = self.and_expr()?;
        while self.eat_word("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and_expr()?));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, Error> {
        let mut left = self.not_expr()?;
        while self.eat_word("and") {
            left = Expr::And(Box::new(left), Box::new(self.not_expr()?));
        }
        Ok(left)
    }

    fn not_expr(&mut self) -> Result<Expr, Error> {
        if self.eat_word("not") || self.eat_sym("!") {
            return Ok(Expr::Not(Box::new(self.not_expr()?)));
        }
        self.cmp_expr()
    }

    fn cmp_expr(&mut self) -> Result<Expr, Error> {
        let start = self.at();
        let left = self.add_expr()?;
        let left_text = self.query[start..self.tokens[self.pos - 1].end].to_owned();
        let op = match self.peek().clone() {
            Tok::Sym("==") => Some(CmpOp::Eq),
            Tok::Sym("!=") => Some(CmpOp::Ne),
            Tok::Sym("===") => Some(CmpOp::EqCs),
            Tok::Sym("!==") => Some(CmpOp::NeCs),
            Tok::Sym("<") => Some(CmpOp::Lt),
            Tok::Sym("<=") => Some(CmpOp::Le),
            Tok::Sym(">") => Some(CmpOp::Gt),
            Tok::Sym(">=") => Some(CmpOp::Ge),
            Tok::Sym("=") => {
                return Err(self.error(
                    format!("`=` is not a comparison; did you mean `{left_text} == ...`?"),
                    Some("compare with `==` (`=` only assigns, in `eval`)".to_owned()),
                ));
            }
            Tok::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                if let Some(&(_, op)) = WORD_OPS.iter().find(|(w, _)| *w == lower) {
                    Some(op)
                } else {
                    match lower.as_str() {
                        "in" | "in_cs" => {
                            self.pos += 1;
                            return self.in_list(left, lower == "in_cs");
                        }
                        "matches" | "matches_cs" => {
                            self.pos += 1;
                            let at = self.at();
                            let pattern = self.string_literal("`matches`")?;
                            let cs = lower == "matches_cs";
                            if let Err(e) = crate::ast::build_regex(&pattern, cs) {
                                return Err(self.error_at(
                                    at,
                                    "invalid regular expression",
                                    Some(first_line(&e)),
                                ));
                            }
                            return Ok(Expr::Matches {
                                expr: Box::new(left),
                                pattern,
                                cs,
                                regex: Default::default(),
                            });
                        }
                        "cidr" => {
                            self.pos += 1;
                            let at = self.at();
                            let net = self.string_literal("`cidr`")?;
                            self.check_net(at, &net)?;
                            return Ok(Expr::Cidr {
                                expr: Box::new(left),
                                net,
                            });
                        }
                        _ if KEYWORDS.contains(&lower.as_str()) => None,
                        _ => return Err(self.missing_comparison(&left_text)),
                    }
                }
            }
            Tok::Num(..) | Tok::Str(_) | Tok::Quoted(_) => {
                return Err(self.missing_comparison(&left_text));
            }
            _ => None,
        };
        let Some(op) = op else { return Ok(left) };
        self.pos += 1;
        let right = self.add_expr()?;
        Ok(Expr::Cmp {
            op,
            left: Box::new(left),
            right: Box::new(right),
        })
    }

    fn missing_comparison(&self, left: &str) -> Error {
        let found = self.peek().describe();
        let hint = match self.peek() {
            Tok::Ident(word) => closest(
                word,
                WORD_OPS
                    .iter()
                    .map(|(w, _)| *w)
                    .chain(["in", "matches", "cidr"]),
            )
            .map(|op| format!("did you mean `{op}`?"))
            .unwrap_or_else(|| "did you mean `==`?".to_owned()),
            _ => "did you mean `==`?".to_owned(),
        };
        self.error(
            format!("expected a comparison after `{left}`, found {found}"),
            Some(hint),
        )
    }

    fn string_literal(&mut self, context: &str) -> Result<String, Error> {
        match self.peek().clone() {
            Tok::Str(text) => {
                self.pos += 1;
                Ok(text)
            }
            other => Err(self.error(
                format!(
                    "expected a quoted string after {context}, found {}",
                    other.describe()
                ),
                None,
            )),
        }
    }

    fn check_net(&self, at: usize, net: &str) -> Result<(), Error> {
        crate::eval::Net::parse(net).map(|_| ()).map_err(|reason| {
            self.error_at(
                at,
                format!("`{net}` is not a network: {reason}"),
                Some(
                    "write an address and prefix length: \"10.0.0.0/8\", \"fe80::/10\"".to_owned(),
                ),
            )
        })
    }

    fn in_list(&mut self, left: Expr, cs: bool) -> Result<Expr, Error> {
        self.expect_sym("(", "after `in`")?;
        let mut values = Vec::new();
        loop {
            let at = self.at();
            match self.next() {
                Tok::Str(s) => values.push(Value::Str(s)),
                Tok::Num(n, _) => values.push(Value::Num(n)),
                Tok::Sym("-") => match self.next() {
                    Tok::Num(n, _) => values.push(Value::Num(-n)),
                    _ => return Err(self.error_at(at, "expected a number after `-`", None)),
                },
                other => {
                    return Err(self.error_at(
                        at,
                        format!("`in (...)` takes literals, found {}", other.describe()),
                        Some("write `Field in (\"a\", \"b\", 3)`".to_owned()),
                    ));
                }
            }
            if self.eat_sym(")") {
                break;
            }
            self.expect_sym(",", "between the values of `in (...)`")?;
        }
        Ok(Expr::In {
            expr: Box::new(left),
            values,
            cs,
        })
    }

    fn add_expr(&mut self) -> Result<Expr, Error> {
        let mut left = self.mul_expr()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => ArithOp::Add,
                Tok::Sym("-") => ArithOp::Sub,
                Tok::Sym("||") => {
                    self.pos += 1;
                    left = Expr::Concat(Box::new(left), Box::new(self.mul_expr()?));
                    continue;
                }
                _ => return Ok(left),
            };
            self.pos += 1;
            left = Expr::Arith {
                op,
                left: Box::new(left),
                right: Box::new(self.mul_expr()?),
            };
        }
    }

    fn mul_expr(&mut self) -> Result<Expr, Error> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => ArithOp::Mul,
                Tok::Sym("/") => ArithOp::Div,
                Tok::Sym("%") => ArithOp::Rem,
                _ => return Ok(left),
            };
            self.pos += 1;
            left = Expr::Arith {
                op,
                left: Box::new(left),
                right: Box::new(self.unary()?),
            };
        }
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        if self.eat_sym("-") {
            return Ok(match self.unary()? {
                Expr::Lit(Value::Num(n)) => Expr::Lit(Value::Num(-n)),
                other => Expr::Neg(Box::new(other)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        let at = self.at();
        match self.next() {
            Tok::Num(n, _) => Ok(Expr::Lit(Value::Num(n))),
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::Quoted(name) => Ok(Expr::Field(name)),
            Tok::Sym("(") => {
                let inner = self.expr()?;
                self.expect_sym(")", "to close `(`")?;
                Ok(inner)
            }
            Tok::Ident(name) => {
                let lower = name.to_ascii_lowercase();
                if matches!(self.peek(), Tok::Sym("(")) {
                    self.pos += 1;
                    return self.call(at, &name);
                }
                match lower.as_str() {
                    "true" => Ok(Expr::Lit(Value::Bool(true))),
                    "false" => Ok(Expr::Lit(Value::Bool(false))),
                    "null" => Ok(Expr::Lit(Value::Null)),
                    word if KEYWORDS.contains(&word) => Err(self.error_at(
                        at,
                        format!("expected a value, found the keyword `{name}`"),
                        Some(format!("quote a field named `{name}` in backquotes")),
                    )),
                    _ => Ok(Expr::Field(name)),
                }
            }
            other => Err(self.error_at(
                at,
                format!("expected a field, value or `(`, found {}", other.describe()),
                matches!(other, Tok::End).then(|| "the condition is incomplete".to_owned()),
            )),
        }
    }

    fn call(&mut self, at: usize, name: &str) -> Result<Expr, Error> {
        let lower = name.to_ascii_lowercase();
        let Some(&(_, func, min, max)) = Func::ALL.iter().find(|(n, ..)| *n == lower) else {
            let names = Func::ALL.iter().map(|(n, ..)| *n);
            let hint = if AggFunc::ALL.iter().any(|(n, _)| *n == lower) {
                format!("`{lower}` is an aggregate: use it in `stats` or `timechart`")
            } else {
                closest(&lower, names)
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| {
                        format!("functions are: {}", Func::ALL.map(|(n, ..)| n).join(", "))
                    })
            };
            return Err(self.error_at(at, format!("unknown function `{name}`"), Some(hint)));
        };
        let mut args = Vec::new();
        if !self.eat_sym(")") {
            loop {
                args.push(self.expr()?);
                if self.eat_sym(")") {
                    break;
                }
                self.expect_sym(",", &format!("between the arguments of `{lower}(`"))?;
            }
        }
        if args.len() < min || args.len() > max {
            let wanted = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.error_at(
                at,
                format!("`{lower}` takes {wanted} argument(s), got {}", args.len()),
                None,
            ));
        }
        if func == Func::Cidr {
            let mut args = args.into_iter();
            let (Some(expr), Some(Expr::Lit(Value::Str(net)))) = (args.next(), args.next()) else {
                return Err(self.error_at(
                    at,
                    "`cidr` takes a field and a quoted network",
                    Some("write `cidr(SourceIp, \"10.0.0.0/8\")`".to_owned()),
                ));
            };
            self.check_net(at, &net)?;
            return Ok(Expr::Cidr {
                expr: Box::new(expr),
                net,
            });
        }
        Ok(Expr::Call { func, args })
    }
}

fn agg_names() -> String {
    AggFunc::ALL.map(|(n, _)| n).join(", ")
}

/// The first line of a multi-line message (the regex crate's errors draw
/// their own caret).
fn first_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or(text)
        .trim()
        .to_owned()
}
