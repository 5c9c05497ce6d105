//! Case-insensitive glob patterns for host names, rule ids, entities and
//! evidence values: `*` (any run of characters), `?` (one character) and
//! classes `[abc]`, `[a-z]`, `[!0-9]`. A backslash is an ordinary character,
//! because Windows paths are full of them; write `[*]` for a literal `*`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A validated glob pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob {
    pattern: String,
    #[serde(skip)]
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    /// Checks and compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty pattern; use `*` to match anything".into());
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // `**` means the same as `*`.
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyOne);
                    i += 1;
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i, pattern)?;
                    tokens.push(token);
                    i = next;
                }
                c => {
                    tokens.push(Token::Literal(fold(c)));
                    i += 1;
                }
            }
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            tokens,
        })
    }

    /// A pattern that matches exactly `text` (case-insensitively).
    pub fn literal(text: &str) -> Self {
        let mut pattern = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '*' | '?' | '[' => {
                    pattern.push('[');
                    pattern.push(c);
                    pattern.push(']');
                }
                c => pattern.push(c),
            }
        }
        // The same tokens `new` compiles the escaped pattern to.
        let tokens = text
            .chars()
            .map(|c| match c {
                '*' | '?' | '[' => Token::Class {
                    negated: false,
                    ranges: vec![(c, c)],
                },
                c => Token::Literal(fold(c)),
            })
            .collect();
        Self { tokens, pattern }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has no wildcard (it matches one text only).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| match t {
            Token::Literal(_) => true,
            Token::Class { negated, ranges } => {
                !negated && ranges.len() == 1 && ranges[0].0 == ranges[0].1
            }
            _ => false,
        })
    }

    /// Whether `text` matches the whole pattern, ignoring case.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().map(fold).collect();
        let tokens = &self.tokens;
        // Greedy match with backtracking to the last `*`: linear in practice,
        // O(n·m) at worst, never exponential.
        let (mut t, mut p) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::AnyRun) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(token) if token.matches_one(text[t]) => {
                    t += 1;
                    p += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        tokens[p..].iter().all(|t| *t == Token::AnyRun)
    }
}

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyOne => true,
            Token::AnyRun => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

fn fold(c: char) -> char {
    c.to_ascii_lowercase()
}

fn parse_class(chars: &[char], open: usize, pattern: &str) -> Result<(Token, usize), String> {
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let first = i;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(format!(
                "`{pattern}`: `[` at position {} is never closed; write `[[]` for a literal `[`",
                open + 1
            ));
        };
        // A `]` right after the opening bracket is a member, as in shell globs.
        if c == ']' && i > first {
            i += 1;
            break;
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&h| h != ']') {
            let hi = chars[i + 2];
            let (lo, hi) = (fold(c), fold(hi));
            if lo > hi {
                return Err(format!(
                    "`{pattern}`: range `{c}-{}` runs backwards; write it low to high",
                    chars[i + 2]
                ));
            }
            ranges.push((lo, hi));
            i += 3;
        } else {
            ranges.push((fold(c), fold(c)));
            i += 1;
        }
    }
    Ok((Token::Class { negated, ranges }, i))
}

impl TryFrom<String> for Glob {
    type Error = String;

    fn try_from(pattern: String) -> Result<Self, Self::Error> {
        Glob::new(&pattern)
    }
}

impl From<Glob> for String {
    fn from(glob: Glob) -> Self {
        glob.pattern
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).expect("pattern").matches(t)
    }

    #[test]
    fn wildcards_classes_and_case() {
        assert!(m("dc*.corp.example", "DC01.corp.example"));
        assert!(!m("dc*.corp.example", "ws01.corp.example"));
        assert!(m("*", ""));
        assert!(m("ws??", "ws07"));
        assert!(!m("ws??", "ws7"));
        assert!(m("srv[0-9][!a]", "srv1b"));
        assert!(!m("srv[0-9][!a]", "srv1a"));
        assert!(m(
            "*\\veeam*.exe",
            "C:\\Program Files\\Veeam\\VeeamAgent.exe"
        ));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("[]]x", "]x"));
        assert!(m("sigma/*", "sigma/abc"));
    }

    #[test]
    fn bad_patterns_say_how_to_fix_them() {
        assert!(Glob::new("").unwrap_err().contains("`*`"));
        assert!(Glob::new("dc[0-9").unwrap_err().contains("never closed"));
        assert!(Glob::new("[z-a]").unwrap_err().contains("backwards"));
    }

    #[test]
    fn literal_matches_only_its_text() {
        let g = Glob::literal("we*rd[1]?");
        assert!(g.matches("WE*RD[1]?"));
        assert!(!g.matches("weXrd[1]?"));
        assert!(g.is_literal());
        assert_eq!(Glob::new(g.as_str()).expect("round trip"), g);
    }

    #[test]
    fn serde_keeps_the_pattern() {
        let g = Glob::new("dc*").expect("pattern");
        let json = serde_json::to_string(&g).expect("json");
        assert_eq!(json, "\"dc*\"");
        let back: Glob = serde_json::from_str(&json).expect("back");
        assert_eq!(back, g);
        assert!(serde_json::from_str::<Glob>("\"[x\"").is_err());
    }
}
