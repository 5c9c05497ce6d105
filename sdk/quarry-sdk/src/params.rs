//! Hunt parameters with typed getters and errors that tell the hunter what
//! to change.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;

/// A parameter that is missing, malformed or out of range.
///
/// The message names the parameter, what was expected and what was given,
/// for example ``parameter `threshold` must be a positive integer, got `abc` ``.
/// It converts into `String`, so `?` works in [`Hunt::new`](crate::Hunt::new).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    message: String,
}

impl ParamError {
    /// An error with a free-form message (for checks the getters do not
    /// cover, such as one parameter constraining another).
    pub fn new(message: impl Into<String>) -> Self {
        ParamError {
            message: message.into(),
        }
    }

    fn invalid(name: &str, expected: &str, got: &str) -> Self {
        ParamError::new(format!(
            "parameter `{name}` must be {expected}, got `{got}`"
        ))
    }

    /// The message, as shown to the hunter.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParamError {}

impl From<ParamError> for String {
    fn from(error: ParamError) -> String {
        error.message
    }
}

/// The parameters a hunt was submitted with: names mapped to text values.
///
/// Getters that take a default return it when the parameter is absent, and a
/// [`ParamError`] when it is present but unusable; a hunter who typed a value
/// wants to hear that it was wrong, not have it silently replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Builds parameters from name/value pairs, as the host passes them to
    /// `init`. A name given twice, or an empty name, is an error: which of two
    /// values the hunter meant cannot be guessed.
    ///
    /// ```
    /// let params = quarry_sdk::Params::from_pairs([("threshold", "5")]).unwrap();
    /// assert_eq!(params.get("threshold"), Some("5"));
    /// assert!(quarry_sdk::Params::from_pairs([("a", "1"), ("a", "2")]).is_err());
    /// ```
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ParamError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            let name = name.into();
            if name.trim().is_empty() {
                return Err(ParamError::new(
                    "a parameter has an empty name; pass parameters as `name=value`",
                ));
            }
            if values.contains_key(&name) {
                return Err(ParamError::new(format!(
                    "parameter `{name}` is given more than once; pass it once"
                )));
            }
            values.insert(name, value.into());
        }
        Ok(Params { values })
    }

    /// The raw value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether `name` was given.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The names given, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Whether no parameter was given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Fails on any parameter not in `known`, naming the accepted ones, so a
    /// misspelt `treshold` is not silently ignored.
    ///
    /// ```
    /// let params = quarry_sdk::Params::from_pairs([("treshold", "5")]).unwrap();
    /// let error = params.ensure_known(&["threshold", "window_minutes"]).unwrap_err();
    /// assert_eq!(
    ///     error.to_string(),
    ///     "unknown parameter `treshold`; this module accepts `threshold`, `window_minutes`"
    /// );
    /// ```
    pub fn ensure_known(&self, known: &[&str]) -> Result<(), ParamError> {
        let Some(unknown) = self.names().find(|name| !known.contains(name)) else {
            return Ok(());
        };
        let accepted = if known.is_empty() {
            "no parameters".to_owned()
        } else {
            known
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(ParamError::new(format!(
            "unknown parameter `{unknown}`; this module accepts {accepted}"
        )))
    }

    /// A string parameter, or `default` when absent.
    pub fn str_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// A non-negative integer, or `default` when absent.
    pub fn u64_or(&self, name: &str, default: u64) -> Result<u64, ParamError> {
        self.parsed_or(name, default, "a non-negative integer", |text| {
            text.parse().ok()
        })
    }

    /// A positive (non-zero) integer, or `default` when absent.
    ///
    /// ```
    /// let params = quarry_sdk::Params::from_pairs([("threshold", "abc")]).unwrap();
    /// assert_eq!(
    ///     params.positive_u64_or("threshold", 5).unwrap_err().to_string(),
    ///     "parameter `threshold` must be a positive integer, got `abc`"
    /// );
    /// ```
    pub fn positive_u64_or(&self, name: &str, default: u64) -> Result<u64, ParamError> {
        self.parsed_or(name, default, "a positive integer", |text| {
            text.parse().ok().filter(|&n: &u64| n > 0)
        })
    }

    /// An integer within `range` (inclusive), or `default` when absent.
    ///
    /// `default` is returned as is, even if outside `range`.
    pub fn u64_in_range_or(
        &self,
        name: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ParamError> {
        let expected = format!("an integer from {} to {}", range.start(), range.end());
        self.parsed_or(name, default, &expected, |text| {
            text.parse().ok().filter(|n| range.contains(n))
        })
    }

    /// A signed integer, or `default` when absent.
    pub fn i64_or(&self, name: &str, default: i64) -> Result<i64, ParamError> {
        self.parsed_or(name, default, "an integer", |text| text.parse().ok())
    }

    /// A finite number, or `default` when absent.
    pub fn f64_or(&self, name: &str, default: f64) -> Result<f64, ParamError> {
        self.parsed_or(name, default, "a number", |text| {
            text.parse().ok().filter(|n: &f64| n.is_finite())
        })
    }

    /// A boolean (`true`/`false`, `yes`/`no`, `1`/`0`, any case), or
    /// `default` when absent.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ParamError> {
        self.parsed_or(name, default, "`true` or `false`", crate::event::parse_bool)
    }

    /// A comma-separated list, with items trimmed and empty items dropped;
    /// empty when absent.
    ///
    /// ```
    /// let params = quarry_sdk::Params::from_pairs([("users", " alice, bob,,")]).unwrap();
    /// assert_eq!(params.list("users"), vec!["alice", "bob"]);
    /// ```
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.get(name)
            .map(|text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn parsed_or<T>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => {
                parse(text.trim()).ok_or_else(|| ParamError::invalid(name, expected, text))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(pairs.iter().copied()).expect("valid test parameters")
    }

    #[test]
    fn absent_parameters_take_the_default() {
        let p = Params::default();
        assert!(p.is_empty());
        assert_eq!(p.u64_or("n", 3), Ok(3));
        assert_eq!(p.positive_u64_or("n", 5), Ok(5));
        assert_eq!(p.i64_or("n", -1), Ok(-1));
        assert_eq!(p.bool_or("b", true), Ok(true));
        assert_eq!(p.str_or("s", "x"), "x");
        assert!(p.list("l").is_empty());
    }

    #[test]
    fn present_parameters_are_parsed() {
        let p = params(&[
            ("threshold", " 7 "),
            ("offset", "-3"),
            ("ratio", "0.5"),
            ("strict", "Yes"),
        ]);
        assert_eq!(p.positive_u64_or("threshold", 5), Ok(7));
        assert_eq!(p.u64_in_range_or("threshold", 5, 1..=10), Ok(7));
        assert_eq!(p.i64_or("offset", 0), Ok(-3));
        assert_eq!(p.f64_or("ratio", 1.0), Ok(0.5));
        assert_eq!(p.bool_or("strict", false), Ok(true));
        assert!(p.contains("ratio"));
        assert_eq!(
            p.names().collect::<Vec<_>>(),
            ["offset", "ratio", "strict", "threshold"]
        );
    }

    #[test]
    fn errors_name_the_parameter_the_expectation_and_the_value() {
        let p = params(&[
            ("threshold", "abc"),
            ("zero", "0"),
            ("window_minutes", "100000"),
            ("ratio", "NaN"),
            ("strict", "maybe"),
            ("neg", "-1"),
        ]);
        let message = |r: Result<_, ParamError>| r.map(|_: u64| ()).unwrap_err().to_string();
        assert_eq!(
            message(p.positive_u64_or("threshold", 5)),
            "parameter `threshold` must be a positive integer, got `abc`"
        );
        assert_eq!(
            message(p.positive_u64_or("zero", 5)),
            "parameter `zero` must be a positive integer, got `0`"
        );
        assert_eq!(
            message(p.u64_in_range_or("window_minutes", 10, 1..=10_080)),
            "parameter `window_minutes` must be an integer from 1 to 10080, got `100000`"
        );
        assert_eq!(
            message(p.u64_or("neg", 1)),
            "parameter `neg` must be a non-negative integer, got `-1`"
        );
        assert_eq!(
            p.f64_or("ratio", 1.0).unwrap_err().message(),
            "parameter `ratio` must be a number, got `NaN`"
        );
        assert_eq!(
            String::from(p.bool_or("strict", false).unwrap_err()),
            "parameter `strict` must be `true` or `false`, got `maybe`"
        );
    }

    #[test]
    fn duplicate_empty_and_unknown_names_are_rejected() {
        assert_eq!(
            Params::from_pairs([("a", "1"), ("a", "2")])
                .unwrap_err()
                .message(),
            "parameter `a` is given more than once; pass it once"
        );
        assert!(Params::from_pairs([(" ", "1")]).is_err());
        let p = params(&[("threshold", "5")]);
        assert_eq!(p.ensure_known(&["threshold"]), Ok(()));
        assert_eq!(
            p.ensure_known(&[]).unwrap_err().message(),
            "unknown parameter `threshold`; this module accepts no parameters"
        );
    }
}
