//! Intel sets: named sets of indicators (hashes, IP addresses, domains,
//! URLs) that a module looks values up in through the host.
//!
//! Until the cluster has an intel store, a hunt passes its sets as
//! parameters named `intel.<set>` (the CLI's `--intel NAME=FILE` reads a
//! file into one). The worker takes those parameters out before the module's
//! `init` sees the rest, builds the sets once per task, and answers the
//! module's `intel-contains` calls; `quarry-sdk` does the same on the build
//! machine, so unit tests behave as on a worker.
//!
//! A set's text holds one indicator per line (or, on a single line,
//! indicators separated by commas). Blank lines and lines starting with `#`
//! are skipped. Indicators and looked-up values are compared after
//! [`normalise`]: trimmed, ASCII-lowercased and re-fanged (`hxxp` → `http`,
//! `[.]` → `.`), as intel feeds often publish defanged indicators.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

/// Parameter-name prefix of an intel set.
pub const PARAM_PREFIX: &str = "intel.";

/// Parameter-name prefix binding a hunt to a stored set of the cluster's
/// intel store: `intel-ref.<name>` = `<version>` (the stored set `<name>`)
/// or `<set>@<version>` (stored set `<set>`, seen by the module as
/// `<name>`). Workers turn it into `intel.<name>`.
pub const REF_PREFIX: &str = "intel-ref.";

/// The stored set and version an `intel-ref.<name>` parameter's `value`
/// names, if it is one.
pub fn parse_ref(name: &str, value: &str) -> Option<(String, u32)> {
    match value.rsplit_once('@') {
        Some((set, version)) if !set.is_empty() => Some((set.to_owned(), version.parse().ok()?)),
        Some(_) => None,
        None => Some((name.to_owned(), value.parse().ok()?)),
    }
}

/// Largest number of indicators across all sets of one task.
pub const MAX_INDICATORS: usize = 1_000_000;

/// The intel sets of one task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntelSets {
    sets: BTreeMap<String, Set>,
}

/// One set: exact values, address ranges (`198.51.100.0/24`) and wildcard
/// domains (`*.evil.example`: any subdomain of evil.example).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Set {
    exact: HashSet<String>,
    ranges: Vec<(IpAddr, u8)>,
    wildcards: HashSet<String>,
}

impl Set {
    fn new<'a>(indicators: impl Iterator<Item = &'a str>) -> Self {
        let mut set = Set::default();
        for indicator in indicators.map(normalise) {
            if let Some(range) = cidr(&indicator) {
                set.ranges.push(range);
            } else if let Some(parent) = indicator.strip_prefix("*.") {
                set.wildcards.insert(parent.to_owned());
            } else {
                set.exact.insert(indicator);
            }
        }
        set
    }

    fn len(&self) -> usize {
        self.exact.len() + self.ranges.len() + self.wildcards.len()
    }

    fn contains(&self, value: &str) -> bool {
        if self.exact.contains(value) {
            return true;
        }
        if !self.ranges.is_empty()
            && let Ok(address) = value.parse::<IpAddr>()
            && self.ranges.iter().any(|range| in_range(address, *range))
        {
            return true;
        }
        // `*.evil.example` holds a.evil.example and a.b.evil.example.
        !self.wildcards.is_empty()
            && value
                .match_indices('.')
                .any(|(at, _)| self.wildcards.contains(&value[at + 1..]))
    }
}

/// `address/len` as a range, if it is one.
pub fn cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, len) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((address, len))
}

/// Whether `address` is in the range `(network, len)` (an IPv4-mapped IPv6
/// address counts as its IPv4 address).
pub fn in_range(address: IpAddr, (network, len): (IpAddr, u8)) -> bool {
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|a| in_range(IpAddr::V4(a), (network, len))),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

impl IntelSets {
    /// No sets.
    pub fn new() -> Self {
        IntelSets::default()
    }

    /// Takes the `intel.<set>` parameters out of `params` and parses them;
    /// the other parameters stay, in order.
    pub fn take_from_params(params: &mut Vec<(String, String)>) -> Result<Self, String> {
        let mut sets = IntelSets::new();
        let mut rest = Vec::with_capacity(params.len());
        for (key, value) in params.drain(..) {
            match key.strip_prefix(PARAM_PREFIX) {
                Some(name) => sets.add(name, &value)?,
                None => rest.push((key, value)),
            }
        }
        *params = rest;
        Ok(sets)
    }

    /// Adds the set `name` from its text (see the module docs).
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), String> {
        crate::check_name("intel set", name)?;
        if self.sets.contains_key(name) {
            return Err(format!(
                "intel set `{name}` is given twice; merge the lists into one"
            ));
        }
        let indicators = Set::new(indicators(text));
        let total = self.len() + indicators.len();
        if total > MAX_INDICATORS {
            return Err(format!(
                "intel sets hold {total} indicators, more than the {MAX_INDICATORS} a task accepts; split the hunt"
            ));
        }
        self.sets.insert(name.to_owned(), indicators);
        Ok(())
    }

    /// Whether the set `set` holds `value` (after [`normalise`]): listed as
    /// it is, inside a listed address range, or a subdomain of a listed
    /// `*.domain`. An unknown set holds nothing.
    pub fn contains(&self, set: &str, value: &str) -> bool {
        self.sets
            .get(set)
            .is_some_and(|indicators| indicators.contains(&normalise(value)))
    }

    /// Each set's name and number of indicators, by name.
    pub fn sizes(&self) -> Vec<(String, u64)> {
        self.sets
            .iter()
            .map(|(name, indicators)| (name.clone(), indicators.len() as u64))
            .collect()
    }

    /// Total number of indicators.
    pub fn len(&self) -> usize {
        self.sets.values().map(Set::len).sum()
    }

    /// Whether there are no indicators (no sets, or only empty ones).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a parameter reads in a hunt's status or a report: an intel set (which
/// can hold millions of indicators) by its size, anything else as it is.
pub fn shown_param(key: &str, value: &str) -> String {
    if key.starts_with(PARAM_PREFIX) {
        let count = indicators(value).count();
        format!("(intel set: {count} indicators, {} bytes)", value.len())
    } else {
        value.to_owned()
    }
}

/// The indicators in a set's text: one per line, or comma-separated on a
/// single line; blank lines and `#` comments skipped.
pub fn indicators(text: &str) -> impl Iterator<Item = &str> {
    let separator = if text.trim_end().contains('\n') {
        '\n'
    } else {
        ','
    };
    text.split(separator)
        .map(str::trim)
        .filter(|item| !item.is_empty() && !item.starts_with('#'))
}

/// The form in which indicators and looked-up values are compared: trimmed,
/// ASCII-lowercased, re-fanged.
pub fn normalise(value: &str) -> String {
    let mut out = value.trim().to_ascii_lowercase();
    for (defanged, fanged) in [("[.]", "."), ("(.)", "."), ("[:]", ":"), ("[://]", "://")] {
        if out.contains(defanged) {
            out = out.replace(defanged, fanged);
        }
    }
    for (defanged, fanged) in [("hxxps://", "https://"), ("hxxp://", "http://")] {
        if let Some(rest) = out.strip_prefix(defanged) {
            out = format!("{fanged}{rest}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn sets_come_out_of_the_parameters() {
        let mut params = pairs(&[
            ("window", "60"),
            ("intel.bad-ips", "10.0.0.1, 10.0.0.2"),
            (
                "intel.domains",
                "# feed 2026-11-27\nEvil[.]Example\n\n  c2.test  \n",
            ),
            ("min", "2"),
        ]);
        let sets = IntelSets::take_from_params(&mut params).unwrap();
        assert_eq!(params, pairs(&[("window", "60"), ("min", "2")]));
        assert_eq!(
            sets.sizes(),
            [("bad-ips".to_owned(), 2), ("domains".to_owned(), 2)]
        );
        assert!(sets.contains("bad-ips", "10.0.0.2"));
        assert!(sets.contains("domains", "EVIL.example"));
        assert!(sets.contains("domains", " c2.TEST"));
        assert!(!sets.contains("domains", "10.0.0.1"));
        assert!(!sets.contains("nope", "10.0.0.1"));
        assert_eq!(sets.len(), 4);
    }

    #[test]
    fn ranges_and_wildcard_domains_match_what_they_cover() {
        let mut sets = IntelSets::new();
        sets.add(
            "feed",
            "198.51.100.0/24\n2001:db8::/32\n*.c2.example\n10.1.2.3\n0.0.0.0/0x\n",
        )
        .unwrap();
        assert!(sets.contains("feed", "198.51.100.77"));
        assert!(!sets.contains("feed", "198.51.101.1"));
        assert!(sets.contains("feed", "2001:db8:1::5"));
        assert!(sets.contains("feed", "::ffff:198.51.100.9"), "IPv4-mapped");
        assert!(sets.contains("feed", "a.c2.example"));
        assert!(sets.contains("feed", "x.y.C2[.]example"));
        assert!(
            !sets.contains("feed", "c2.example"),
            "the wildcard is for subdomains"
        );
        assert!(!sets.contains("feed", "notc2.example"));
        assert!(sets.contains("feed", "10.1.2.3"));
        assert!(
            sets.contains("feed", "0.0.0.0/0x"),
            "not a range: kept as written"
        );
        let mut everything = IntelSets::new();
        everything.add("all", "0.0.0.0/0").unwrap();
        assert!(everything.contains("all", "203.0.113.1"));
    }

    #[test]
    fn stored_set_references_name_a_set_and_a_version() {
        assert_eq!(parse_ref("ips", "3"), Some(("ips".to_owned(), 3)));
        assert_eq!(
            parse_ref("ips", "oneoff-ab12@1"),
            Some(("oneoff-ab12".to_owned(), 1))
        );
        assert_eq!(parse_ref("ips", "x"), None);
        assert_eq!(parse_ref("ips", "@1"), None);
    }

    #[test]
    fn bad_sets_are_refused_with_the_fix() {
        let mut params = pairs(&[("intel.Bad Name", "x")]);
        assert!(
            IntelSets::take_from_params(&mut params)
                .unwrap_err()
                .contains("a-z, 0-9")
        );
        let mut sets = IntelSets::new();
        sets.add("a", "x").unwrap();
        assert!(sets.add("a", "y").unwrap_err().contains("given twice"));
    }

    #[test]
    fn urls_keep_their_commas_when_listed_one_per_line() {
        let mut sets = IntelSets::new();
        sets.add("urls", "hxxp://evil[.]test/a,b\nhttps://x.test/\n")
            .unwrap();
        assert!(sets.contains("urls", "http://evil.test/a,b"));
        assert_eq!(normalise(" HXXPS://A[.]B "), "https://a.b");
        assert_eq!(
            shown_param("intel.watch", "# list\nlonely.exe\nnot-seen.exe\n"),
            "(intel set: 2 indicators, 31 bytes)"
        );
        assert_eq!(shown_param("threshold", "5"), "5");
    }
}
