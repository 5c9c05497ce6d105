//! The crate's one error type.

/// What went wrong with a query, a plan or a partial.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The query does not parse or does not make sense; rendered as the
    /// query's line with a caret under the column, and a hint.
    #[error("{}", render(.query, *.offset, .message, .hint.as_deref()))]
    Parse {
        /// The query text.
        query: String,
        /// Byte offset of the problem in `query`.
        offset: usize,
        /// What is wrong.
        message: String,
        /// How to fix it, when there is a likely fix.
        hint: Option<String>,
    },
    /// A compiled plan received from elsewhere is not usable (a regular
    /// expression that does not compile, a version this crate does not
    /// speak).
    #[error("invalid query plan: {0}")]
    Plan(String),
    /// Partials that cannot be merged (from different plans or stages).
    #[error("cannot merge query partials: {0}")]
    Merge(String),
}

impl Error {
    pub(crate) fn parse(
        query: &str,
        offset: usize,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Error {
        Error::Parse {
            query: query.to_owned(),
            offset: offset.min(query.len()),
            message: message.into(),
            hint,
        }
    }

    /// For a parse error: the 1-based line and column (in characters).
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            Error::Parse { query, offset, .. } => Some(line_column(query, *offset)),
            _ => None,
        }
    }
}

fn line_column(query: &str, offset: usize) -> (usize, usize) {
    let before = query.get(..offset).unwrap_or(query);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn render(query: &str, offset: usize, message: &str, hint: Option<&str>) -> String {
    let (line, column) = line_column(query, offset);
    let text = query.lines().nth(line - 1).unwrap_or("");
    let mut out = format!(
        "{message} (line {line}, column {column})\n  {text}\n  {}^",
        " ".repeat(column - 1)
    );
    if let Some(hint) = hint {
        out.push_str("\n  hint: ");
        out.push_str(hint);
    }
    out
}
