//! STIX 2.1 bundles: the `indicator` objects whose `pattern_type` is
//! `stix`, with `valid_from`/`valid_until` honoured. Other objects (malware,
//! relationships, identities, ...) are skipped, not errors.
//!
//! Patterns are read in the subset a sweep can use: one or more
//! observations joined by `OR`, each holding comparisons joined by `OR`
//! (parentheses allowed), each comparison `PATH = 'value'` (or
//! `PATH ISSUBSET 'cidr'` for addresses) on one of these paths:
//!
//! | path | kind |
//! |---|---|
//! | `ipv4-addr:value`, `ipv6-addr:value` | IP address or CIDR range |
//! | `network-traffic:dst_ref.value`, `network-traffic:src_ref.value` | IP address or CIDR range |
//! | `domain-name:value` | domain (or `*.` wildcard) |
//! | `url:value` | URL |
//! | `file:hashes.MD5`, `file:hashes.'SHA-1'`, `file:hashes.'SHA-256'` | hash |
//!
//! A pattern with `AND`, `FOLLOWEDBY`, qualifiers (`WITHIN`, `REPEATS`,
//! `START`/`STOP`), other operators or other paths cannot be swept value by
//! value: it is reported with its object's position and skipped.

use crate::indicator::{Indicator, Kind};
use crate::{Import, IntelError};
use serde_json::Value;

/// Reads a bundle (or a single object, or a JSON array of objects).
pub fn import(bytes: &[u8], now_ms: i64) -> Result<Import, IntelError> {
    let document: Value = serde_json::from_slice(bytes)
        .map_err(|e| IntelError::Format(format!("not a STIX 2.1 bundle: invalid JSON ({e})")))?;
    let objects = match &document {
        Value::Object(object) if object.get("type").and_then(Value::as_str) == Some("bundle") => {
            object
                .get("objects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        }
        Value::Object(_) => vec![document.clone()],
        Value::Array(objects) => objects.clone(),
        _ => {
            return Err(IntelError::Format(
                "not a STIX 2.1 bundle: expected a JSON object with \"type\": \"bundle\"".into(),
            ));
        }
    };
    let mut import = Import::default();
    for (n, object) in objects.iter().enumerate() {
        let id = object.get("id").and_then(Value::as_str).unwrap_or("?");
        let position = format!("object {} ({id})", n + 1);
        if object.get("type").and_then(Value::as_str) != Some("indicator") {
            import.skipped += 1;
            continue;
        }
        match object.get("pattern_type").and_then(Value::as_str) {
            Some("stix") => {}
            Some(other) => {
                import.problem(
                    position,
                    format!("pattern_type `{other}` is not read; only `stix` patterns are"),
                );
                continue;
            }
            None => {
                import.problem(position, "an indicator needs a pattern_type");
                continue;
            }
        }
        let time = |field: &str| -> Result<Option<i64>, String> {
            match object.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => parse_time(text)
                    .map(Some)
                    .map_err(|e| format!("{field} `{text}` is not an RFC 3339 time: {e}")),
                Some(_) => Err(format!("{field} must be a timestamp string")),
            }
        };
        let (valid_from_ms, valid_until_ms) = match (time("valid_from"), time("valid_until")) {
            (Ok(from), Ok(until)) => (from, until),
            (Err(e), _) | (_, Err(e)) => {
                import.problem(position, e);
                continue;
            }
        };
        if valid_until_ms.is_some_and(|until| until <= now_ms) {
            import.skipped += 1;
            continue;
        }
        let Some(pattern) = object.get("pattern").and_then(Value::as_str) else {
            import.problem(position, "an indicator needs a pattern");
            continue;
        };
        match parse_pattern(pattern) {
            Ok(found) => {
                for mut indicator in found {
                    indicator.valid_from_ms = valid_from_ms;
                    indicator.valid_until_ms = valid_until_ms;
                    import.push(indicator);
                }
            }
            Err(why) => import.problem(position, format!("pattern {pattern}: {why}")),
        }
    }
    Ok(import)
}

fn parse_time(text: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| e.to_string())?;
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis();
    i64::try_from(ms).map_err(|e| e.to_string())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    LParen,
    RParen,
    Str(String),
    Eq,
    /// Any other comparison operator.
    Op(String),
    /// AND, OR, ISSUBSET, WITHIN, ... (upper case).
    Word(String),
    Path(String),
}

const KEYWORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "FOLLOWEDBY",
    "ISSUBSET",
    "ISSUPERSET",
    "LIKE",
    "MATCHES",
    "IN",
    "WITHIN",
    "REPEATS",
    "TIMES",
    "START",
    "STOP",
    "SECONDS",
    "EXISTS",
];

fn tokens(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let string = |i: &mut usize| -> Result<String, String> {
        // At the opening quote.
        let mut value = String::new();
        *i += 1;
        while *i < chars.len() {
            match chars[*i] {
                '\\' if *i + 1 < chars.len() => {
                    value.push(chars[*i + 1]);
                    *i += 2;
                }
                '\'' => {
                    *i += 1;
                    return Ok(value);
                }
                c => {
                    value.push(c);
                    *i += 1;
                }
            }
        }
        Err("a string is not closed (`'`)".to_owned())
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '[' => {
                out.push(Token::Open);
                i += 1;
            }
            ']' => {
                out.push(Token::Close);
                i += 1;
            }
            '(' => {
                out.push(Token::LParen);
                i += 1;
            }
            ')' => {
                out.push(Token::RParen);
                i += 1;
            }
            '\'' => out.push(Token::Str(string(&mut i)?)),
            '=' => {
                out.push(Token::Eq);
                i += 1;
            }
            '!' | '<' | '>' => {
                let mut op = c.to_string();
                if chars.get(i + 1) == Some(&'=') {
                    op.push('=');
                    i += 1;
                }
                out.push(Token::Op(op));
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = String::new();
                while i < chars.len() {
                    let c = chars[i];
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '*') {
                        word.push(c);
                        i += 1;
                    } else if c == '\'' && word.ends_with('.') {
                        // hashes.'SHA-256'
                        let quoted = string(&mut i)?;
                        word.push_str(&quoted);
                    } else {
                        break;
                    }
                }
                if word.contains(':') && !KEYWORDS.contains(&word.as_str()) {
                    out.push(Token::Path(word));
                } else {
                    // Keywords, and numbers and `t` of qualifiers: the
                    // parser names what it does not take.
                    out.push(Token::Word(word));
                }
            }
            other => return Err(format!("unexpected `{other}`")),
        }
    }
    Ok(out)
}

/// The kind of value a path holds, if it is one a sweep can use.
fn path_kind(path: &str) -> Option<Kind> {
    let path = path.to_ascii_lowercase();
    match path.as_str() {
        "ipv4-addr:value"
        | "ipv6-addr:value"
        | "network-traffic:dst_ref.value"
        | "network-traffic:src_ref.value" => Some(Kind::Ip),
        "domain-name:value" => Some(Kind::Domain),
        "url:value" => Some(Kind::Url),
        _ => match path.strip_prefix("file:hashes.")? {
            "md5" => Some(Kind::Md5),
            "sha-1" | "sha1" => Some(Kind::Sha1),
            "sha-256" | "sha256" => Some(Kind::Sha256),
            _ => None,
        },
    }
}

/// The indicators of a pattern in the supported subset (module docs).
pub fn parse_pattern(pattern: &str) -> Result<Vec<Indicator>, String> {
    let tokens = tokens(pattern)?;
    let mut indicators = Vec::new();
    let mut depth = 0usize;
    let mut parens = 0usize;
    let mut i = 0;
    let mut expect_comparison = true;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Open if depth == 0 && expect_comparison => depth = 1,
            Token::Close if depth == 1 && !expect_comparison && parens == 0 => depth = 0,
            Token::LParen if expect_comparison => parens += 1,
            Token::RParen if parens > 0 && !expect_comparison => parens -= 1,
            Token::Word(word) if word == "OR" && !expect_comparison => expect_comparison = true,
            Token::Word(word)
                if matches!(
                    word.as_str(),
                    "AND" | "FOLLOWEDBY" | "WITHIN" | "REPEATS" | "START" | "STOP"
                ) =>
            {
                return Err(format!(
                    "`{word}` is not supported: Quarry imports patterns whose comparisons are joined by OR"
                ));
            }
            Token::Path(path) if depth == 1 && expect_comparison => {
                let kind = path_kind(path)
                    .ok_or_else(|| format!("the path `{path}` is not one a sweep can use"))?;
                let (operator, value) = match (tokens.get(i + 1), tokens.get(i + 2)) {
                    (Some(op), Some(Token::Str(value))) => (op, value),
                    _ => return Err(format!("`{path}` must be compared with a string")),
                };
                match operator {
                    Token::Eq => {}
                    Token::Word(word) if word == "ISSUBSET" && kind == Kind::Ip => {}
                    other => {
                        return Err(format!(
                            "the operator {} is not supported; use = (or ISSUBSET for address ranges)",
                            describe(other)
                        ));
                    }
                }
                indicators.push(Indicator::of_kind(kind, value)?);
                i += 2;
                expect_comparison = false;
            }
            other => return Err(format!("unexpected {}", describe(other))),
        }
        i += 1;
    }
    if depth != 0 || parens != 0 || expect_comparison {
        return Err("the pattern is incomplete (brackets or a comparison missing)".to_owned());
    }
    Ok(indicators)
}

fn describe(token: &Token) -> String {
    match token {
        Token::Open => "`[`".into(),
        Token::Close => "`]`".into(),
        Token::LParen => "`(`".into(),
        Token::RParen => "`)`".into(),
        Token::Str(s) => format!("'{s}'"),
        Token::Eq => "`=`".into(),
        Token::Op(op) | Token::Word(op) | Token::Path(op) => format!("`{op}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_in_the_subset_give_their_values_and_others_say_why_not() {
        let values = |pattern: &str| {
            parse_pattern(pattern).map(|found| {
                found
                    .into_iter()
                    .map(|i| (i.kind, i.value))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            values("[ipv4-addr:value = '198.51.100.7']"),
            Ok(vec![(Kind::Ip, "198.51.100.7".into())])
        );
        assert_eq!(
            values("[ipv4-addr:value ISSUBSET '198.51.100.0/24']"),
            Ok(vec![(Kind::Cidr, "198.51.100.0/24".into())])
        );
        assert_eq!(
            values(
                "[file:hashes.'SHA-256' = 'AEC070645FE53EE3B3763059376134F058CC337247C978ADD178B6CCDFB0019F']"
            ),
            Ok(vec![(
                Kind::Sha256,
                "aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f".into()
            )])
        );
        assert_eq!(
            values("[domain-name:value = 'evil.example' OR (url:value = 'http://evil.example/a\\'b')] OR [file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']")
                .map(|v| v.len()),
            Ok(3)
        );
        for (pattern, why) in [
            (
                "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e' AND file:name = 'a.exe']",
                "AND",
            ),
            ("[ipv4-addr:value = '1.2.3.4'] WITHIN 300 SECONDS", "WITHIN"),
            ("[email-addr:value = 'a@example.org']", "email-addr:value"),
            ("[url:value MATCHES 'evil']", "MATCHES"),
            ("[ipv4-addr:value = '1.2.3.4'", "incomplete"),
            ("[domain-name:value = 'not a domain']", "not a valid domain"),
            ("[ipv4-addr:value = 'unterminated]", "not closed"),
        ] {
            let err = values(pattern).expect_err(pattern);
            assert!(err.contains(why), "{pattern}: {err}");
        }
    }

    #[test]
    fn a_bundle_imports_valid_indicators_skips_the_rest_and_names_bad_objects() {
        let bundle = r#"{
          "type": "bundle", "id": "bundle--1",
          "objects": [
            {"type": "identity", "spec_version": "2.1", "id": "identity--1", "name": "feed"},
            {"type": "indicator", "spec_version": "2.1", "id": "indicator--a",
             "pattern": "[ipv4-addr:value = '203.0.113.9']", "pattern_type": "stix",
             "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00.000Z"},
            {"type": "indicator", "spec_version": "2.1", "id": "indicator--expired",
             "pattern": "[ipv4-addr:value = '203.0.113.10']", "pattern_type": "stix",
             "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2021-01-01T00:00:00Z"},
            {"type": "indicator", "spec_version": "2.1", "id": "indicator--yara",
             "pattern": "rule x { condition: true }", "pattern_type": "yara",
             "valid_from": "2026-01-01T00:00:00Z"},
            {"type": "indicator", "spec_version": "2.1", "id": "indicator--and",
             "pattern": "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e' AND file:size = 0]",
             "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z"}
          ]
        }"#;
        let now = parse_time("2026-12-03T00:00:00Z").expect("time");
        let import = import(bundle.as_bytes(), now).expect("bundle");
        assert_eq!(import.indicators.len(), 1);
        let found = &import.indicators[0];
        assert_eq!(found.value, "203.0.113.9");
        assert_eq!(
            found.valid_until_ms,
            Some(parse_time("2027-01-01T00:00:00Z").expect("t"))
        );
        assert_eq!(import.skipped, 2, "the identity and the expired indicator");
        let positions: Vec<_> = import
            .problems
            .iter()
            .map(|p| p.position.as_str())
            .collect();
        assert_eq!(
            positions,
            ["object 4 (indicator--yara)", "object 5 (indicator--and)"]
        );
        assert!(super::import(b"{not json", now).is_err());
    }
}
