//! Evaluation of expressions over one event or row.

use std::net::IpAddr;

use base64::Engine as _;

use crate::ast::{ArithOp, CmpOp, Expr, Func};
use crate::value::{Value, fold};

/// Where an expression finds its fields.
pub(crate) trait Scope {
    fn get(&self, name: &str) -> Value;
}

/// Evaluates `expr` in `scope`. Never fails: undefined operations (text
/// arithmetic, division by zero, a missing field) give null.
pub(crate) fn eval(expr: &Expr, scope: &dyn Scope) -> Value {
    match expr {
        Expr::Lit(v) => v.clone(),
        Expr::Field(name) => scope.get(name),
        Expr::Not(e) => Value::Bool(!eval(e, scope).truthy()),
        Expr::And(a, b) => Value::Bool(eval(a, scope).truthy() && eval(b, scope).truthy()),
        Expr::Or(a, b) => Value::Bool(eval(a, scope).truthy() || eval(b, scope).truthy()),
        Expr::Cmp { op, left, right } => {
            Value::Bool(compare_op(*op, &eval(left, scope), &eval(right, scope)))
        }
        Expr::In { expr, values, cs } => {
            let op = if *cs { CmpOp::EqCs } else { CmpOp::Eq };
            let value = eval(expr, scope);
            Value::Bool(
                values
                    .iter()
                    .any(|candidate| compare_op(op, &value, candidate)),
            )
        }
        Expr::Matches {
            expr,
            pattern,
            cs,
            regex,
        } => {
            let Some(regex) = regex.get(pattern, *cs) else {
                return Value::Bool(false);
            };
            Value::Bool(any_text(&eval(expr, scope), &|text| regex.is_match(text)))
        }
        Expr::Cidr { expr, net } => {
            let Ok(net) = Net::parse(net) else {
                return Value::Bool(false);
            };
            Value::Bool(any_text(&eval(expr, scope), &|text| net.contains(text)))
        }
        Expr::Arith { op, left, right } => {
            let (Some(a), Some(b)) = (
                eval(left, scope).as_number(),
                eval(right, scope).as_number(),
            ) else {
                return Value::Null;
            };
            let n = match op {
                ArithOp::Add => a + b,
                ArithOp::Sub => a - b,
                ArithOp::Mul => a * b,
                ArithOp::Div if b == 0.0 => return Value::Null,
                ArithOp::Div => a / b,
                ArithOp::Rem if b == 0.0 => return Value::Null,
                ArithOp::Rem => a % b,
            };
            if n.is_finite() {
                Value::Num(n)
            } else {
                Value::Null
            }
        }
        Expr::Concat(a, b) => match (eval(a, scope).text(), eval(b, scope).text()) {
            (Some(a), Some(b)) => Value::Str(a + &b),
            _ => Value::Null,
        },
        Expr::Neg(e) => eval(e, scope)
            .as_number()
            .map_or(Value::Null, |n| Value::Num(-n)),
        Expr::Call { func, args } => call(*func, args, scope),
    }
}

/// Whether `test` holds for the text of `value` or of one of its elements.
fn any_text(value: &Value, test: &dyn Fn(&str) -> bool) -> bool {
    match value {
        Value::List(items) => items.iter().any(|item| any_text(item, test)),
        other => other.text().is_some_and(|text| test(&text)),
    }
}

/// A comparison. A list holds when one element does (`!=` when none is
/// equal); null equals only null, and every other comparison with null is
/// false. Two numbers (or numeric texts) compare as numbers, anything else
/// as text, case-insensitively except for the `_cs` forms and `===`; a
/// number is never less or greater than non-numeric text.
pub(crate) fn compare_op(op: CmpOp, left: &Value, right: &Value) -> bool {
    match op {
        CmpOp::Ne => return !compare_op(CmpOp::Eq, left, right),
        CmpOp::NeCs => return !compare_op(CmpOp::EqCs, left, right),
        _ => {}
    }
    if let Value::List(items) = left {
        return items.iter().any(|item| compare_op(op, item, right));
    }
    if let Value::List(items) = right {
        return items.iter().any(|item| compare_op(op, left, item));
    }
    if left.is_null() || right.is_null() {
        return matches!(op, CmpOp::Eq | CmpOp::EqCs) && left.is_null() && right.is_null();
    }
    let text_op = matches!(
        op,
        CmpOp::Contains { .. } | CmpOp::StartsWith { .. } | CmpOp::EndsWith { .. }
    );
    let ordering = matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge);
    let (x, y) = (left.as_number(), right.as_number());
    // `Bytes > 100` never holds for text that is not a number.
    if ordering && x.is_some() != y.is_some() {
        return false;
    }
    if let (Some(a), Some(b)) = (x, y)
        && !text_op
    {
        return match op {
            CmpOp::Eq | CmpOp::EqCs => a == b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            _ => false,
        };
    }
    let (Some(a), Some(b)) = (left.text(), right.text()) else {
        return false;
    };
    let cs = matches!(
        op,
        CmpOp::EqCs
            | CmpOp::Contains { cs: true }
            | CmpOp::StartsWith { cs: true }
            | CmpOp::EndsWith { cs: true }
    );
    let (a, b) = if cs { (a, b) } else { (fold(&a), fold(&b)) };
    match op {
        CmpOp::Eq | CmpOp::EqCs => a == b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Contains { .. } => a.contains(&b),
        CmpOp::StartsWith { .. } => a.starts_with(&b),
        CmpOp::EndsWith { .. } => a.ends_with(&b),
        // Negations are handled at the top.
        CmpOp::Ne | CmpOp::NeCs => false,
    }
}

fn call(func: Func, args: &[Expr], scope: &dyn Scope) -> Value {
    let arg = |i: usize| args.get(i).map_or(Value::Null, |e| eval(e, scope));
    let text_fn = |f: &dyn Fn(&str) -> Value| arg(0).text().map_or(Value::Null, |t| f(&t));
    match func {
        Func::Lower => text_fn(&|t| Value::Str(t.to_lowercase())),
        Func::Upper => text_fn(&|t| Value::Str(t.to_uppercase())),
        Func::Len => text_fn(&|t| Value::Num(t.chars().count() as f64)),
        Func::Base64Decode => text_fn(&|t| base64_decode(t).map_or(Value::Null, Value::Str)),
        Func::Entropy => text_fn(&|t| Value::Num(entropy(t))),
        Func::Coalesce => args
            .iter()
            .map(|e| eval(e, scope))
            .find(Value::exists)
            .unwrap_or(Value::Null),
        Func::If => {
            if arg(0).truthy() {
                arg(1)
            } else {
                arg(2)
            }
        }
        Func::Exists => Value::Bool(arg(0).exists()),
        Func::IsNull => Value::Bool(arg(0).is_null()),
        Func::ToNumber => arg(0).as_number().map_or(Value::Null, Value::Num),
        Func::ToString => arg(0).text().map_or(Value::Null, Value::Str),
        // Parsed into `Expr::Cidr`; never reaches here from the parser.
        Func::Cidr => Value::Null,
    }
}

/// Standard or URL-safe base64, padded or not, surrounding space ignored;
/// the bytes as UTF-16LE text when they look like it (PowerShell's
/// `-EncodedCommand`), else as UTF-8 (invalid sequences replaced).
pub(crate) fn base64_decode(text: &str) -> Option<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())?;
    let zero_high = bytes.chunks_exact(2).filter(|pair| pair[1] == 0).count();
    if bytes.len() >= 2 && bytes.len() % 2 == 0 && zero_high * 10 >= (bytes.len() / 2) * 9 {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        return Some(String::from_utf16_lossy(&units));
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Shannon entropy of the characters of `text`, in bits per character.
pub(crate) fn entropy(text: &str) -> f64 {
    let mut counts = std::collections::BTreeMap::<char, usize>::new();
    let mut total = 0usize;
    for c in text.chars() {
        *counts.entry(c).or_default() += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    let h: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    // Rounded so the figure prints the same everywhere (and -0 never shows).
    (h * 1e9).round() / 1e9 + 0.0
}

/// An IP network for `cidr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    /// `a.b.c.d/n`, `v6::/n`, or a single address.
    pub(crate) fn parse(text: &str) -> Result<Net, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?,
        };
        Ok(Net { addr, prefix })
    }

    /// Whether the address `text` is in the network (IPv4 and IPv6 never
    /// mix).
    pub(crate) fn contains(&self, text: &str) -> bool {
        // No trimming: the pushdown relies on an address being its exact text.
        let Ok(ip) = text.parse::<IpAddr>() else {
            return false;
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}
