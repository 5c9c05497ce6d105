//! Threat intelligence as the cluster's intel store takes it in: indicators
//! (IP addresses and CIDR ranges, domains and `*.` wildcard domains, URLs,
//! MD5/SHA-1/SHA-256 hashes) read from a STIX 2.1 bundle ([`stix`]), a MISP
//! event ([`misp`]) or a CSV file with a named column ([`csv_column`]).
//!
//! An import never fails on one bad entry: each entry that cannot be used
//! is reported with its position ([`Problem`]) and the rest imported. Only
//! a file that is not the format at all (not JSON, no such column) fails.

pub mod indicator;
pub mod misp;
pub mod stix;

pub use indicator::{Indicator, Kind};

use std::fmt;

/// What an import could not use, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where in the input: `line 7`, `object 3 (indicator--…)`, `attribute 12`.
    pub position: String,
    /// What is wrong, for the person who maintains the feed.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.message)
    }
}

/// The result of reading one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Import {
    /// The usable indicators, in input order, without duplicates.
    pub indicators: Vec<Indicator>,
    /// Entries that could not be used.
    pub problems: Vec<Problem>,
    /// Entries left out on purpose (MISP attributes not marked `to_ids`,
    /// STIX objects that are not indicators, indicators already expired).
    pub skipped: usize,
}

impl Import {
    fn push(&mut self, indicator: Indicator) {
        if !self.indicators.contains(&indicator) {
            self.indicators.push(indicator);
        }
    }

    fn problem(&mut self, position: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            position: position.into(),
            message: message.into(),
        });
    }
}

/// Why a whole file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IntelError {
    /// Not the format it was said to be.
    #[error("{0}")]
    Format(String),
}

/// The formats an import reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// A STIX 2.1 bundle (JSON).
    Stix,
    /// A MISP event (JSON, `{"Event": {...}}`).
    Misp,
    /// CSV with a header row; indicators from the named column.
    Csv {
        /// The column's header.
        column: String,
    },
    /// One indicator per line; blank lines and `#` comments skipped.
    Lines,
}

impl std::str::FromStr for Format {
    type Err = IntelError;

    fn from_str(s: &str) -> Result<Self, IntelError> {
        match s {
            "stix" => Ok(Format::Stix),
            "misp" => Ok(Format::Misp),
            "" | "lines" => Ok(Format::Lines),
            _ => match s.strip_prefix("csv:") {
                Some(column) if !column.is_empty() => Ok(Format::Csv {
                    column: column.to_owned(),
                }),
                _ => Err(IntelError::Format(format!(
                    "unknown intel format `{s}`: use stix, misp, csv:COLUMN (the header of the column holding the indicators) or lines"
                ))),
            },
        }
    }
}

/// Reads `bytes` in `format`; `now_ms` (unix ms) decides which STIX
/// indicators have expired.
pub fn import(format: &Format, bytes: &[u8], now_ms: i64) -> Result<Import, IntelError> {
    match format {
        Format::Stix => stix::import(bytes, now_ms),
        Format::Misp => misp::import(bytes),
        Format::Csv { column } => csv_column(bytes, column),
        Format::Lines => lines(bytes),
    }
}

/// Indicators one per line.
pub fn lines(bytes: &[u8]) -> Result<Import, IntelError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| IntelError::Format("an intel list must be UTF-8 text".into()))?;
    let mut import = Import::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match Indicator::parse(line) {
            Ok(found) => import.push(found),
            Err(message) => import.problem(format!("line {}", n + 1), message),
        }
    }
    Ok(import)
}

/// Indicators from the column `column` of a CSV file with a header row.
pub fn csv_column(bytes: &[u8], column: &str) -> Result<Import, IntelError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| IntelError::Format(format!("not CSV: {e}")))?
        .clone();
    let Some(index) = headers.iter().position(|h| h.eq_ignore_ascii_case(column)) else {
        return Err(IntelError::Format(format!(
            "the CSV has no column `{column}`; its columns are {}",
            headers.iter().collect::<Vec<_>>().join(", ")
        )));
    };
    let mut import = Import::default();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                import.problem(format!("line {line}"), e.to_string());
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        // `#` lines are comments (handled here so positions stay file lines).
        if record.get(0).is_some_and(|first| first.starts_with('#')) {
            continue;
        }
        match record.get(index).map(str::trim) {
            None | Some("") => import.problem(
                format!("line {line}"),
                format!("no value in column `{column}`"),
            ),
            Some(value) => match Indicator::parse(value) {
                Ok(indicator) => import.push(indicator),
                Err(why) => import.problem(format!("line {line}"), why),
            },
        }
    }
    Ok(import)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_takes_the_named_column_and_reports_bad_rows_by_line() {
        let text = "first_seen,indicator,comment\n\
                    2026-11-01,203.0.113.7,c2\n\
                    2026-11-02,evil[.]example,phish\n\
                    2026-11-03,not an indicator,?\n\
                    # a comment line\n\
                    2026-11-04,,empty\n\
                    2026-11-05,10.0.0.0/8,range\n";
        let import = csv_column(text.as_bytes(), "Indicator").expect("csv");
        let values: Vec<_> = import.indicators.iter().map(|i| i.value.as_str()).collect();
        assert_eq!(values, ["203.0.113.7", "evil.example", "10.0.0.0/8"]);
        let lines: Vec<_> = import
            .problems
            .iter()
            .map(|p| p.position.as_str())
            .collect();
        assert_eq!(lines, ["line 4", "line 6"], "{:?}", import.problems);
        let missing = csv_column(text.as_bytes(), "ioc").expect_err("no such column");
        assert!(
            missing
                .to_string()
                .contains("first_seen, indicator, comment"),
            "{missing}"
        );
        assert!("csv:".parse::<Format>().is_err());
        assert_eq!(
            "csv:ioc".parse::<Format>().expect("format"),
            Format::Csv {
                column: "ioc".into()
            }
        );
    }
}
