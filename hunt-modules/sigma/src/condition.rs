//! Sigma conditions: `and`, `or`, `not`, parentheses, `1 of` / `all of`
//! (also `N of`) over `them` or name patterns with `*` wildcards.
//!
//! Precedence, loosest first: `or`, `and`, `not`. Aggregations
//! (`| count() > 5`) and `near` need state across events and are rejected.

use crate::rule::RuleError;

/// A condition with search references resolved to indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// The search with this index.
    Search(usize),
    /// Negation.
    Not(Box<Cond>),
    /// All of.
    And(Vec<Cond>),
    /// Any of.
    Or(Vec<Cond>),
    /// At least `n` of the searches.
    AtLeast(usize, Vec<usize>),
}

impl Cond {
    /// Evaluates with `search(i)` telling whether search `i` matches.
    pub fn eval(&self, search: &mut dyn FnMut(usize) -> bool) -> bool {
        match self {
            Cond::Search(i) => search(*i),
            Cond::Not(c) => !c.eval(search),
            Cond::And(cs) => cs.iter().all(|c| c.eval(search)),
            Cond::Or(cs) => cs.iter().any(|c| c.eval(search)),
            Cond::AtLeast(n, ids) => {
                let mut hits = 0;
                for &i in ids {
                    if search(i) {
                        hits += 1;
                        if hits >= *n {
                            return true;
                        }
                    }
                }
                false
            }
        }
    }

    /// The searches the condition can read.
    pub fn searches(&self, out: &mut Vec<usize>) {
        match self {
            Cond::Search(i) => out.push(*i),
            Cond::Not(c) => c.searches(out),
            Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|c| c.searches(out)),
            Cond::AtLeast(_, ids) => out.extend(ids),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
    Pipe,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        match c {
            '(' | ')' | '|' => {
                if !word.is_empty() {
                    tokens.push(Token::Word(std::mem::take(&mut word)));
                }
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Pipe,
                });
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    tokens.push(Token::Word(std::mem::take(&mut word)));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        tokens.push(Token::Word(word));
    }
    tokens
}

/// Parses `text` against the rule's search `names` (in rule order).
pub fn parse(text: &str, names: &[String]) -> Result<Cond, RuleError> {
    let tokens = tokenize(text);
    if tokens.contains(&Token::Pipe) {
        return Err(RuleError::Unsupported(
            "aggregation in condition (`| count()` ...)".to_owned(),
        ));
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        names,
        text,
    };
    let cond = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(parser.error("unexpected token"));
    }
    Ok(cond)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    names: &'a [String],
    text: &'a str,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> RuleError {
        RuleError::Invalid(format!(
            "condition `{}`: {what} at token {}",
            self.text,
            self.pos + 1
        ))
    }

    fn peek_word(&self) -> Option<String> {
        match self.tokens.get(self.pos) {
            Some(Token::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn or(&mut self) -> Result<Cond, RuleError> {
        let mut parts = vec![self.and()?];
        while self.peek_word().as_deref() == Some("or") {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Cond, RuleError> {
        let mut parts = vec![self.not()?];
        while self.peek_word().as_deref() == Some("and") {
            self.pos += 1;
            parts.push(self.not()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::And(parts)
        })
    }

    fn not(&mut self) -> Result<Cond, RuleError> {
        if self.peek_word().as_deref() == Some("not") {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Cond, RuleError> {
        match self.tokens.get(self.pos).cloned() {
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                if self.tokens.get(self.pos) != Some(&Token::Close) {
                    return Err(self.error("missing `)`"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Word(word)) => {
                let lower = word.to_ascii_lowercase();
                let quantity = if lower == "all" {
                    Some(None)
                } else if lower == "any" {
                    Some(Some(1))
                } else {
                    lower.parse::<usize>().ok().map(Some)
                };
                if let Some(quantity) = quantity
                    && let Some(Token::Word(of)) = self.tokens.get(self.pos + 1)
                    && of.eq_ignore_ascii_case("of")
                {
                    let Some(Token::Word(pattern)) = self.tokens.get(self.pos + 2).cloned() else {
                        return Err(self.error("`of` needs `them` or a pattern"));
                    };
                    self.pos += 3;
                    let ids = self.matching(&pattern)?;
                    let n = quantity.unwrap_or(ids.len());
                    return Ok(Cond::AtLeast(n.max(1), ids));
                }
                if matches!(lower.as_str(), "and" | "or" | "of") {
                    return Err(self.error(&format!("unexpected `{word}`")));
                }
                if lower == "near" {
                    return Err(RuleError::Unsupported("`near` in condition".to_owned()));
                }
                self.pos += 1;
                let index = self.names.iter().position(|n| *n == word).ok_or_else(|| {
                    RuleError::Invalid(format!(
                        "condition `{}` names `{word}`, which is not a search of the rule",
                        self.text
                    ))
                })?;
                Ok(Cond::Search(index))
            }
            Some(Token::Close) => Err(self.error("unexpected `)`")),
            Some(Token::Pipe) | None => Err(self.error("unexpected end")),
        }
    }

    /// Indexes of the searches `pattern` names (`them`: all searches whose
    /// name does not start with `_`).
    fn matching(&self, pattern: &str) -> Result<Vec<usize>, RuleError> {
        let ids: Vec<usize> = self
            .names
            .iter()
            .enumerate()
            .filter(|(_, name)| {
                if pattern == "them" {
                    !name.starts_with('_')
                } else {
                    glob(pattern, name)
                }
            })
            .map(|(i, _)| i)
            .collect();
        if ids.is_empty() {
            return Err(RuleError::Invalid(format!(
                "condition `{}`: `{pattern}` matches no search",
                self.text
            )));
        }
        Ok(ids)
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        } else if let Some(at) = rest.find(part) {
            rest = &rest[at + part.len()..];
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn eval(text: &str, all: &[&str], hits: &[&str]) -> bool {
        let names = names(all);
        let cond = parse(text, &names).unwrap();
        cond.eval(&mut |i| hits.contains(&names[i].as_str()))
    }

    #[test]
    fn boolean_operators_and_precedence() {
        let all = ["a", "b", "c"];
        assert!(eval("a and not b", &all, &["a"]));
        assert!(!eval("a and not b", &all, &["a", "b"]));
        // `and` binds tighter than `or`.
        assert!(eval("a or b and c", &all, &["a"]));
        assert!(!eval("(a or b) and c", &all, &["a"]));
        assert!(eval("not (a or b)", &all, &["c"]));
        assert!(eval("NOT a AND b", &all, &["b"]));
    }

    #[test]
    fn quantifiers_and_patterns() {
        let all = ["selection_1", "selection_2", "filter_main_x", "_hidden"];
        assert!(eval("1 of selection_*", &all, &["selection_2"]));
        assert!(!eval("all of selection_*", &all, &["selection_2"]));
        assert!(eval(
            "all of selection_*",
            &all,
            &["selection_1", "selection_2"]
        ));
        assert!(!eval(
            "all of selection_* and not 1 of filter_main_*",
            &all,
            &["selection_1", "selection_2", "filter_main_x"]
        ));
        // `them` leaves out names starting with `_`.
        assert!(eval(
            "all of them",
            &all,
            &["selection_1", "selection_2", "filter_main_x"]
        ));
        assert!(eval("1 of sel*", &all, &["selection_1"]));
        assert!(eval("any of them", &all, &["filter_main_x"]));
    }

    #[test]
    fn errors_are_precise() {
        let all = names(&["a"]);
        assert!(matches!(
            parse("a | count() > 5", &all).unwrap_err(),
            RuleError::Unsupported(_)
        ));
        assert!(parse("b", &all).unwrap_err().to_string().contains("`b`"));
        assert!(parse("1 of x*", &all).is_err());
        assert!(parse("(a", &all).is_err());
        assert!(parse("a and", &all).is_err());
        assert!(parse("a a", &all).is_err());
    }

    #[test]
    fn glob_patterns() {
        assert!(glob("sel*", "selection"));
        assert!(glob("*tion", "selection"));
        assert!(glob("s*l*n", "selection"));
        assert!(!glob("x*", "selection"));
        assert!(glob("*", ""));
    }
}
