//! Values, and how the language compares them.
//!
//! Every field of an event is text, as the host projects it for modules
//! (numbers and booleans in their JSON text form); arrays are lists of such
//! texts. Text that spells a plain decimal number compares as a number, so
//! `EventID == 4688` holds whether the log wrote `4688` or `"4688"`.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// One value of a field, an expression or a result cell.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// Missing, `null`, or the result of an undefined operation.
    Null,
    /// A boolean, from a comparison in `eval`.
    Bool(bool),
    /// A number (IEEE-754 double).
    Num(f64),
    /// Text.
    Str(String),
    /// An array field; comparisons hold when one element does.
    List(Vec<Value>),
}

impl Value {
    /// The value of a JSON field, as the host would hand it to a module:
    /// numbers and booleans become their JSON text, objects their compact
    /// JSON text, arrays lists.
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Str(b.to_string()),
            serde_json::Value::Number(n) => Value::Str(n.to_string()),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => {
                Value::List(items.iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(_) => Value::Str(json.to_string()),
        }
    }

    /// The value of a projected field's text (the module's view): text
    /// that is a JSON array becomes a list, as the JSON form would.
    pub fn from_text(text: &str) -> Value {
        if text.starts_with('[')
            && let Ok(json @ serde_json::Value::Array(_)) = serde_json::from_str(text)
        {
            return Value::from_json(&json);
        }
        Value::Str(text.to_owned())
    }

    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Present and non-empty, as the host prefilter's `exists`: not null,
    /// not `""`, not an empty list.
    pub fn exists(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Str(s) => !s.is_empty(),
            Value::List(items) => !items.is_empty(),
            Value::Bool(_) | Value::Num(_) => true,
        }
    }

    /// The value as a number: numbers, and text spelling a plain decimal
    /// number (see [`parse_number`]).
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Num(n) if n.is_finite() => Some(*n),
            Value::Str(s) => parse_number(s),
            _ => None,
        }
    }

    /// The text form: numbers as [`format_number`], lists as compact JSON;
    /// `None` for null.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Num(n) => Some(format_number(*n)),
            Value::Str(s) => Some(s.clone()),
            Value::List(_) => Some(self.to_json().to_string()),
        }
    }

    /// As JSON, for output and group keys. Non-finite numbers become null.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Num(n) => number_json(*n),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
        }
    }

    /// Truthiness for `where` over an expression and for `if()`: true,
    /// non-zero numbers, and the text `true` (any case).
    pub fn truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Num(n) => *n != 0.0 && !n.is_nan(),
            Value::Str(s) => s.eq_ignore_ascii_case("true"),
            Value::Null | Value::List(_) => false,
        }
    }
}

impl Serialize for Value {
    // Through `to_json`, so integral numbers print as integers (`3`, not `3.0`).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

fn number_json(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        // Integral values print without a fraction, as a hunter wrote them.
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// A number's text: integers without a fraction, others in Rust's shortest
/// round-tripping form.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Parses text that spells a plain decimal number: an optional `-`, an
/// integer part without leading zeros, an optional fraction. No exponent,
/// no `+`, no surrounding space, and a fraction only up to 15 significant
/// digits (what a double holds exactly), so a number equal to an integer
/// `N` is always spelled `N` or `N.000`: the host prefilter can then skip
/// blocks on its digits (see [`crate::plan::Pushdown`]).
pub fn parse_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let int_len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 || (int_len > 1 && digits[0] == b'0') {
        return None;
    }
    let rest = &digits[int_len..];
    if !rest.is_empty() {
        let fraction = rest.strip_prefix(b".")?;
        if fraction.is_empty() || !fraction.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let significant = digits[..int_len]
            .iter()
            .chain(fraction)
            .skip_while(|&&b| b == b'0')
            .count();
        if significant > 15 {
            return None;
        }
    }
    text.parse().ok()
}

/// Case folding for case-insensitive comparisons: ASCII letters lowercase,
/// other letters by their Unicode lowercase mapping (`É` = `é`, `Ω` = `ω`),
/// except the few non-ASCII letters whose lowercase is ASCII (the Kelvin
/// sign `K`, the dotted `İ`), which stay as they are. So folding never
/// turns non-ASCII text into ASCII, and an ASCII needle matches folded text
/// exactly where the host prefilter's ASCII case-insensitive match does.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if c.to_lowercase().any(|l| l.is_ascii()) {
            out.push(c);
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The order of `sort`, `min`/`max` of text, and of ties: numbers before
/// text, numbers by value, text by bytes, null last.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    match (a.as_number(), b.as_number()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.text().cmp(&b.text()),
    }
}

/// Maps a finite double onto an `i64` preserving order, so numeric minima
/// and maxima travel in the contract's integer `Range` aggregate.
pub fn f64_to_ordered(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    if bits < 0 { bits ^ i64::MAX } else { bits }
}

/// The inverse of [`f64_to_ordered`].
pub fn ordered_to_f64(v: i64) -> f64 {
    let bits = if v < 0 { v ^ i64::MAX } else { v };
    f64::from_bits(bits as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimals_are_numbers_and_other_spellings_text() {
        assert_eq!(parse_number("4688"), Some(4688.0));
        assert_eq!(parse_number("-3.25"), Some(-3.25));
        assert_eq!(parse_number("0.5"), Some(0.5));
        for text in [
            "", "-", "04688", "+1", " 1", "1 ", "1e3", "1.", ".5", "0x10", "1.2.3", "NaN", "inf",
        ] {
            assert_eq!(parse_number(text), None, "{text:?}");
        }
        // 16 significant digits in a fraction could round: text.
        assert_eq!(parse_number("4687.999999999999"), None);
        assert!(parse_number("4687.99999999999").is_some());
        assert_eq!(
            parse_number("123456789012345678901"),
            Some(123456789012345678901.0)
        );
    }

    #[test]
    fn folding_is_unicode_but_never_makes_ascii() {
        assert_eq!(fold("ÉCOLE Straße ΩMEGA"), "école straße ωmega");
        assert_eq!(fold("\u{212A}elvin"), "\u{212A}elvin");
        assert_eq!(fold("İstanbul"), "İstanbul");
    }

    #[test]
    fn ordered_encoding_keeps_order() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            1e300,
        ];
        for pair in values.windows(2) {
            assert!(
                f64_to_ordered(pair[0]) <= f64_to_ordered(pair[1]),
                "{pair:?}"
            );
            assert_eq!(ordered_to_f64(f64_to_ordered(pair[0])), pair[0]);
        }
    }

    #[test]
    fn json_fields_read_as_the_host_projects_them() {
        let json: serde_json::Value =
            serde_json::json!({"n": 4688, "b": true, "a": [1, "x"], "o": {"k": 1}});
        assert_eq!(Value::from_json(&json["n"]), Value::Str("4688".into()));
        assert_eq!(Value::from_json(&json["b"]), Value::Str("true".into()));
        assert_eq!(
            Value::from_json(&json["a"]),
            Value::List(vec![Value::Str("1".into()), Value::Str("x".into())])
        );
        assert_eq!(Value::from_json(&json["o"]), Value::Str("{\"k\":1}".into()));
        assert_eq!(Value::from_text("[1,\"x\"]"), Value::from_json(&json["a"]));
        assert_eq!(
            Value::from_text("[not json"),
            Value::Str("[not json".into())
        );
    }
}
