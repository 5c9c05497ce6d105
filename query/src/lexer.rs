//! Tokens of a query, each with the byte offset it starts at.

use crate::error::Error;

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A bare name: a stage, keyword, function or field (`id.orig_h` and
    /// `@values` included).
    Ident(String),
    /// A field name in backquotes.
    Quoted(String),
    /// A string literal in double or single quotes.
    Str(String),
    /// A number literal, with its text.
    Num(f64, String),
    /// Punctuation and operators.
    Sym(&'static str),
    /// End of the query.
    End,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Quoted(name) => format!("`{name}`"),
            Tok::Str(text) => format!("the string \"{text}\""),
            Tok::Num(_, text) => format!("the number {text}"),
            Tok::Sym(sym) => format!("`{sym}`"),
            Tok::End => "the end of the query".to_owned(),
        }
    }
}

/// A token and where it starts.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub at: usize,
    /// Byte offset just past the token.
    pub end: usize,
}

// Longest first, so `===` is not read as `==` `=`.
const SYMBOLS: [&str; 20] = [
    "===", "!==", "==", "!=", "<=", ">=", "||", "|", "(", ")", ",", "<", ">", "=", "+", "-", "*",
    "/", "%", "!",
];

fn ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '@' || c == '$'
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '@' | '$' | '.')
}

/// Splits `query` into tokens, ending with [`Tok::End`].
pub(crate) fn lex(query: &str) -> Result<Vec<Token>, Error> {
    let mut tokens = Vec::new();
    let mut chars = query.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            chars.next();
            let mut text = String::new();
            let mut closed = None;
            while let Some((i, ch)) = chars.next() {
                if ch == c {
                    closed = Some(i + ch.len_utf8());
                    break;
                }
                if ch == '\\' && c != '`' {
                    let Some((_, escaped)) = chars.next() else {
                        break;
                    };
                    // Only quotes and backslashes escape: Windows paths
                    // (`"C:\Windows\nltest.exe"`) keep their backslashes.
                    match escaped {
                        '\\' | '"' | '\'' => text.push(escaped),
                        other => {
                            text.push('\\');
                            text.push(other);
                        }
                    }
                    continue;
                }
                text.push(ch);
            }
            let Some(end) = closed else {
                let what = if c == '`' { "field name" } else { "string" };
                return Err(Error::parse(
                    query,
                    at,
                    format!("unterminated {what}"),
                    Some(format!("close it with {c}")),
                ));
            };
            let tok = if c == '`' {
                Tok::Quoted(text)
            } else {
                Tok::Str(text)
            };
            tokens.push(Token { tok, at, end });
            continue;
        }
        if c.is_ascii_digit() {
            let mut end = at;
            let mut seen_dot = false;
            while let Some(&(i, ch)) = chars.peek() {
                let next_is_digit =
                    query[i + ch.len_utf8()..].starts_with(|d: char| d.is_ascii_digit());
                if ch.is_ascii_digit() || (ch == '.' && !seen_dot && next_is_digit) {
                    seen_dot |= ch == '.';
                    end = i + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            let text = &query[at..end];
            let value: f64 = text
                .parse()
                .map_err(|_| Error::parse(query, at, format!("`{text}` is not a number"), None))?;
            tokens.push(Token {
                tok: Tok::Num(value, text.to_owned()),
                at,
                end,
            });
            continue;
        }
        if ident_start(c) {
            let mut end = at;
            while let Some(&(i, ch)) = chars.peek() {
                if ident_char(ch) {
                    end = i + ch.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            // A trailing dot or colon belongs to no name.
            let name = query[at..end].trim_end_matches('.');
            if name.len() < end - at {
                return Err(Error::parse(
                    query,
                    at + name.len(),
                    format!(
                        "unexpected `{}` after `{name}`",
                        &query[at + name.len()..end]
                    ),
                    Some("quote such field names in backquotes: `a.b`".to_owned()),
                ));
            }
            tokens.push(Token {
                tok: Tok::Ident(name.to_owned()),
                at,
                end,
            });
            continue;
        }
        let rest = &query[at..];
        let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) else {
            return Err(Error::parse(
                query,
                at,
                format!("unexpected character `{c}`"),
                None,
            ));
        };
        for _ in 0..sym.len() {
            chars.next();
        }
        tokens.push(Token {
            tok: Tok::Sym(sym),
            at,
            end: at + sym.len(),
        });
    }
    // The end points just past the last character, not past trailing space.
    let end = query.trim_end().len();
    tokens.push(Token {
        tok: Tok::End,
        at: end,
        end,
    });
    Ok(tokens)
}
