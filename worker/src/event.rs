//! The event model and field access, independent of how events are stored.
//!
//! An event is a JSON object. Windows logs reach Quarry in two shapes: flat
//! documents with Sigma-style field names at top level (OTRF "mordor" data and
//! most SIEM exports: `EventID`, `TargetUserName`, `@timestamp`), and the nested
//! shape the `evtx` crate produces from `.evtx` files
//! (`Event.System.EventID`, `Event.EventData.TargetUserName`). [`normalize`]
//! turns the nested shape into the flat one at ingest, so a hunt module reads
//! `TargetUserName` whatever the source was. [`lookup`] still follows dotted
//! paths for data that is nested by nature (CloudTrail's
//! `userIdentity.userName`, Suricata's `alert.signature`).
//!
//! Timestamps are normalised to milliseconds since the Unix epoch (UTC) by
//! [`event_timestamp_ms`], which understands the timestamp fields and formats of
//! the log families Quarry ingests. The ISO-8601 parser is written here rather
//! than pulled from a date crate: `humantime` rejects numeric UTC offsets
//! (Suricata writes `-0600`), and the arithmetic is small enough to test fully.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// One event as stored in a shard and handed to a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position of the event in its shard (0 for the first event ingested).
    /// Stable across runs and restarts, so findings can cite it.
    pub offset: u64,
    /// Event time in milliseconds since the Unix epoch (UTC); 0 when the event
    /// has no recognisable timestamp.
    pub timestamp_ms: i64,
    /// The normalised event document (always a JSON object).
    pub doc: Value,
}

// ---------------------------------------------------------------------------
// Field access
// ---------------------------------------------------------------------------

/// Resolves a field path in an event.
///
/// A key that exists verbatim wins, so flat names that contain dots (Zeek's
/// `id.orig_h` in unflattened exports) resolve directly. Otherwise the path is
/// split at dots and followed into nested objects (`userIdentity.userName`);
/// a segment that is a decimal number indexes into an array (`resources.0.ARN`).
///
/// Because [`normalize`] flattens EVTX documents at ingest, paths written
/// against the raw `evtx` shape (`Event.EventData.TargetUserName`,
/// `EventData.TargetUserName`, `Event.System.Computer`, `System.Computer`) fall
/// back to the flat name when the nested path does not exist. This keeps
/// modules written against either shape working, and costs nothing for paths
/// that resolve.
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    if let Some(found) = lookup_in(doc, path) {
        return Some(found);
    }
    without_evtx_prefix(path).and_then(|rest| lookup_in(doc, rest))
}

/// A raw EVTX path (`Event.EventData.X`, `System.X`, ...) without its
/// prefix: normalised events carry those fields flat, by their own name.
pub fn without_evtx_prefix(path: &str) -> Option<&str> {
    const EVTX_PREFIXES: [&str; 5] = [
        "Event.EventData.",
        "Event.System.",
        "Event.UserData.",
        "EventData.",
        "System.",
    ];
    EVTX_PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .filter(|rest| !rest.is_empty())
}

/// Whether events timed from `min` to `max` (if any), plus `untimed` events
/// stored with timestamp 0, can fall in `[start, end)`.
pub fn time_bounds_overlap(
    min: Option<i64>,
    max: Option<i64>,
    untimed: u64,
    start: i64,
    end: i64,
) -> bool {
    if start >= end {
        return false;
    }
    let timed = match (min, max) {
        (Some(min), Some(max)) => start <= max && min < end,
        _ => false,
    };
    timed || (untimed > 0 && start <= 0 && 0 < end)
}

fn lookup_in<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => {
            if let Some(found) = map.get(path) {
                return Some(found);
            }
            // Try every dot as the split point, leftmost first. Real paths have a
            // handful of segments, so this stays cheap, and it lets a key with a
            // dot in it sit anywhere along the path.
            for (i, _) in path.match_indices('.') {
                if let Some(child) = map.get(&path[..i])
                    && let Some(found) = lookup_in(child, &path[i + 1..])
                {
                    return Some(found);
                }
            }
            None
        }
        Value::Array(items) => {
            let (head, rest) = match path.split_once('.') {
                Some((head, rest)) => (head, Some(rest)),
                None => (path, None),
            };
            let index: usize = head.parse().ok()?;
            let item = items.get(index)?;
            match rest {
                Some(rest) => lookup_in(item, rest),
                None => Some(item),
            }
        }
        _ => None,
    }
}

/// The text form of a field value, as hunt modules and the prefilter see it.
///
/// Strings are returned as they are, numbers and booleans in their JSON text
/// form (`4625`, `1588205199.82437`, `true`), objects and arrays as compact
/// JSON. `null` has no text: it reads as a missing field.
pub fn value_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        // serde_json's Display is the compact form.
        Value::Array(_) | Value::Object(_) => Some(Cow::Owned(v.to_string())),
    }
}

/// About the size of `v` as compact JSON, without serialising it: exact
/// for keys, strings without escapes, booleans and null; numbers count 8
/// bytes. Enough to size a block.
pub fn approx_json_len(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(b) => 4 + usize::from(!b),
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|i| approx_json_len(i) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + approx_json_len(v))
                .sum::<usize>()
        }
    }
}

/// The pseudo-field a module declares to read every value of an event at
/// once (contract 0.2.2): keyword searches ("this text anywhere in the
/// event") without declaring every field an event might have. Only
/// projected; a prefilter clause cannot name it.
pub const ALL_VALUES_FIELD: &str = "@values";

/// The text of [`ALL_VALUES_FIELD`]: every scalar value of `doc` (strings
/// as they are, numbers and booleans as JSON text; nested objects and
/// arrays walked in document order, keys left out, nulls and empty strings
/// skipped), one per line. `None` when the event has no value.
pub fn all_values_text(doc: &Value) -> Option<String> {
    fn walk(value: &Value, out: &mut String) {
        match value {
            Value::Null => {}
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            Value::Object(map) => map.values().for_each(|item| walk(item, out)),
            scalar => {
                if let Some(text) = value_text(scalar).filter(|t| !t.is_empty()) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&text);
                }
            }
        }
    }
    let mut out = String::new();
    walk(doc, &mut out);
    (!out.is_empty()).then_some(out)
}

// ---------------------------------------------------------------------------
// EVTX normalisation
// ---------------------------------------------------------------------------

/// Flattens documents in the `evtx` crate's nested shape into flat,
/// Sigma-style field names; leaves every other document unchanged.
///
/// A document is treated as EVTX when it is an object whose `Event` member is
/// an object with a `System` object. The result holds:
///
/// * every `System` field at top level (`EventID`, `Channel`, `Computer`,
///   `Level`, `EventRecordID`, …). A `System` child with XML attributes becomes
///   `<Child>_<Attribute>` (`Provider_Name`, `Provider_Guid`,
///   `Execution_ProcessID`, `Security_UserID`), a child with a `#text` becomes
///   `<Child>` (`EventID` when it carries `Qualifiers`, which then become
///   `EventID_Qualifiers`), and `TimeCreated` is the `SystemTime` attribute.
///   A numeric-string `EventID` becomes a number, as in flat exports;
/// * every `EventData` field at top level, whether `EventData` is an object of
///   named values (the `evtx` crate's usual output), holds `Data` entries of the
///   form `{"#attributes":{"Name":..},"#text":..}` (alone or in an array), or
///   holds unnamed `Data` values (classic event-log providers), which are kept
///   as `Data` (one value, or an array of them). A `null` `EventData` adds
///   nothing;
/// * the fields of each `UserData` child element (`LogFileCleared`, …) at top
///   level;
/// * any other `Event` section (`RenderingInfo`, …) and any member of the
///   document besides `Event`, kept as they are under their own name.
///
/// `System` fields are placed first and win on a name clash; a clashing field
/// from another section is kept as `<Section>_<Field>` (`EventData_Version`)
/// rather than dropped. `null` values in `System` (`"Security": null`) are
/// omitted, since they carry nothing.
pub fn normalize(doc: Value) -> Value {
    let Value::Object(mut top) = doc else {
        return doc;
    };
    let mut event = match top.remove("Event") {
        Some(Value::Object(event)) if matches!(event.get("System"), Some(Value::Object(_))) => {
            event
        }
        Some(other) => {
            top.insert("Event".to_owned(), other);
            return Value::Object(top);
        }
        None => return Value::Object(top),
    };

    let mut flat = Map::new();
    // Sections in a fixed order (System first), because the map's iteration
    // order is alphabetical and System must win name clashes.
    if let Some(system) = event.remove("System") {
        flatten_system(system, &mut flat);
    }
    if let Some(data) = event.remove("EventData") {
        flatten_event_data("EventData", data, &mut flat);
    }
    if let Some(user_data) = event.remove("UserData") {
        flatten_user_data(user_data, &mut flat);
    }
    // `#attributes` of `Event` is only the XML namespace.
    event.remove("#attributes");
    for (section, value) in event {
        insert_field(&mut flat, "Event", section, value);
    }
    for (key, value) in top {
        insert_field(&mut flat, "Record", key, value);
    }
    Value::Object(flat)
}

fn flatten_system(system: Value, flat: &mut Map<String, Value>) {
    let Value::Object(system) = system else {
        // Not the shape we know: keep it rather than lose it.
        insert_field(flat, "Event", "System".to_owned(), system);
        return;
    };
    for (key, value) in system {
        match value {
            Value::Null => {}
            Value::Object(mut obj) => {
                if key == "TimeCreated"
                    && let Some(time) = obj
                        .get_mut("#attributes")
                        .and_then(|attrs| attrs.get_mut("SystemTime"))
                        .map(Value::take)
                {
                    insert_field(flat, "System", key, time);
                    continue;
                }
                if let Some(text) = obj.remove("#text") {
                    let text = if key == "EventID" {
                        number_from_text(text)
                    } else {
                        text
                    };
                    insert_field(flat, "System", key.clone(), text);
                }
                if let Some(attrs) = obj.remove("#attributes") {
                    match attrs {
                        Value::Object(attrs) => {
                            for (attr, v) in attrs {
                                if !v.is_null() {
                                    insert_field(flat, "System", format!("{key}_{attr}"), v);
                                }
                            }
                        }
                        Value::Null => {}
                        other => insert_field(flat, "System", format!("{key}_attributes"), other),
                    }
                }
                for (child, v) in obj {
                    if !v.is_null() {
                        insert_field(flat, "System", format!("{key}_{child}"), v);
                    }
                }
            }
            Value::String(_) if key == "EventID" => {
                insert_field(flat, "System", key, number_from_text(value));
            }
            other => insert_field(flat, "System", key, other),
        }
    }
}

/// Flattens `EventData` (or a `UserData` child, which has the same shape once
/// its element name is stripped).
fn flatten_event_data(section: &str, data: Value, flat: &mut Map<String, Value>) {
    match data {
        Value::Null => {}
        Value::Object(map) => {
            let mut unnamed = Vec::new();
            for (key, value) in map {
                match key.as_str() {
                    // Attributes of the section element itself (xmlns, Name of
                    // a UserData element): not event fields.
                    "#attributes" => {}
                    "Data" => collect_data(section, value, flat, &mut unnamed),
                    // Unnamed text directly in the section element.
                    "#text" => push_unnamed(value, &mut unnamed),
                    _ => insert_field(flat, section, key, element_text(value)),
                }
            }
            match unnamed.len() {
                0 => {}
                1 => {
                    let only = unnamed.pop().unwrap_or(Value::Null);
                    insert_field(flat, section, "Data".to_owned(), only);
                }
                _ => insert_field(flat, section, "Data".to_owned(), Value::Array(unnamed)),
            }
        }
        // Not an object: keep it under the section's own name.
        other => insert_field(flat, section, section.to_owned(), other),
    }
}

fn collect_data(
    section: &str,
    value: Value,
    flat: &mut Map<String, Value>,
    unnamed: &mut Vec<Value>,
) {
    match value {
        Value::Array(items) => {
            for item in items {
                collect_data_entry(section, item, flat, unnamed);
            }
        }
        other => collect_data_entry(section, other, flat, unnamed),
    }
}

fn collect_data_entry(
    section: &str,
    entry: Value,
    flat: &mut Map<String, Value>,
    unnamed: &mut Vec<Value>,
) {
    match entry {
        Value::Null => {}
        Value::Object(mut obj) => {
            let name = obj
                .get("#attributes")
                .and_then(|attrs| attrs.get("Name"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            match name {
                // A named value with no text is an empty field: keep it as null
                // so the name is still visible.
                Some(name) => {
                    let text = obj.remove("#text").unwrap_or(Value::Null);
                    insert_field(flat, section, name, text);
                }
                None => match obj.remove("#text") {
                    Some(text) => push_unnamed(text, unnamed),
                    None => {
                        obj.remove("#attributes");
                        if !obj.is_empty() {
                            unnamed.push(Value::Object(obj));
                        }
                    }
                },
            }
        }
        other => unnamed.push(other),
    }
}

fn push_unnamed(text: Value, unnamed: &mut Vec<Value>) {
    match text {
        Value::Array(items) => unnamed.extend(items.into_iter().filter(|v| !v.is_null())),
        Value::Null => {}
        other => unnamed.push(other),
    }
}

fn flatten_user_data(user_data: Value, flat: &mut Map<String, Value>) {
    match user_data {
        Value::Object(children) => {
            for (element, value) in children {
                match value {
                    Value::Object(_) => flatten_event_data("UserData", value, flat),
                    other => insert_field(flat, "UserData", element, element_text(other)),
                }
            }
        }
        Value::Null => {}
        other => insert_field(flat, "UserData", "UserData".to_owned(), other),
    }
}

/// An XML element rendered by `evtx` as `{"#text": x}` or
/// `{"#attributes": {..}, "#text": x}` reads as `x`.
fn element_text(value: Value) -> Value {
    match value {
        Value::Object(mut obj)
            if obj.contains_key("#text")
                && obj.keys().all(|k| k == "#text" || k == "#attributes") =>
        {
            obj.remove("#text").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// `"4625"` → `4625`; anything else unchanged.
fn number_from_text(value: Value) -> Value {
    if let Value::String(s) = &value
        && let Ok(n) = s.trim().parse::<u64>()
    {
        return Value::from(n);
    }
    value
}

/// Inserts a flattened field. On a clash with a different value the field is
/// kept as `<section>_<key>` (then `_2`, `_3`, …) instead of being lost.
fn insert_field(flat: &mut Map<String, Value>, section: &str, key: String, value: Value) {
    match flat.get(&key) {
        None => {
            flat.insert(key, value);
        }
        Some(existing) if *existing == value => {}
        Some(_) => {
            let base = format!("{section}_{key}");
            let mut candidate = base.clone();
            let mut n = 2;
            while flat.contains_key(&candidate) {
                candidate = format!("{base}_{n}");
                n += 1;
            }
            flat.insert(candidate, value);
        }
    }
}

// ---------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------

/// Timestamp fields, most trustworthy first.
///
/// * `@timestamp`: set by collectors (Logstash, NXLog pipelines, CloudTrail
///   exports), always UTC.
/// * `TimeCreated`: Windows event time (flattened EVTX, mordor exports; UTC).
/// * `UtcTime`: Sysmon's event time (UTC, no zone suffix).
/// * `timestamp`: Suricata EVE (ISO-8601 with a numeric offset).
/// * `ts`: Zeek (epoch seconds as a float, or ISO-8601).
/// * `eventTime`: AWS CloudTrail.
/// * `TimeGenerated`: Azure Monitor / Sentinel rows.
/// * `EventTime`: last, because NXLog writes it in the collector's *local*
///   time without a zone (`2020-08-05 02:09:26` next to an `@timestamp` of
///   `06:09:29Z` in the OTRF data), so it is only a fallback.
/// * `Event.System.TimeCreated.#attributes.SystemTime`: a raw, unnormalised
///   EVTX document.
pub const TIMESTAMP_FIELDS: &[&str] = &[
    "@timestamp",
    "TimeCreated",
    "UtcTime",
    "timestamp",
    "ts",
    "eventTime",
    "TimeGenerated",
    "EventTime",
    "Event.System.TimeCreated.#attributes.SystemTime",
];

/// The event's time in milliseconds since the Unix epoch (UTC), from the first
/// field of [`TIMESTAMP_FIELDS`] that holds a parseable time; `None` when no
/// field does.
///
/// Accepted values: ISO-8601 / RFC 3339 strings (see [`parse_timestamp_ms`]),
/// epoch numbers (seconds, milliseconds, microseconds or nanoseconds, told
/// apart by magnitude, with fractions), and `{"#attributes":{"SystemTime":..}}`
/// objects.
pub fn event_timestamp_ms(doc: &Value) -> Option<i64> {
    TIMESTAMP_FIELDS
        .iter()
        .filter_map(|field| doc.get(*field).or_else(|| lookup(doc, field)))
        .find_map(timestamp_from_value)
}

fn timestamp_from_value(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => parse_timestamp_ms(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                epoch_integer_to_ms(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                epoch_integer_to_ms(i128::from(u))
            } else {
                let f = n.as_f64()?;
                if !f.is_finite() {
                    return None;
                }
                // Rust's Display for f64 is the shortest decimal that reads back
                // as the same float and never uses exponents, so parsing that
                // text keeps `1588205199.82437` exact instead of computing
                // `f * 1000.0` and flooring a binary approximation.
                parse_epoch_decimal(&format!("{f}"), 1)
            }
        }
        Value::Object(obj) => obj
            .get("#attributes")
            .and_then(|attrs| attrs.get("SystemTime"))
            .and_then(Value::as_str)
            .and_then(parse_timestamp_ms),
        _ => None,
    }
}

/// Parses a timestamp string to milliseconds since the Unix epoch (UTC).
///
/// Accepts ISO-8601 / RFC 3339 dates and date-times (see
/// [`parse_iso8601_ms`]) and decimal epoch numbers written as strings with at
/// least nine integer digits (`"1588205199.82437"`; shorter numbers are too
/// easily a year or a count to be read as a time).
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let first = *s.as_bytes().first()?;
    if first.is_ascii_digit() || first == b'-' {
        let digits_only = s
            .strip_prefix('-')
            .unwrap_or(s)
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.');
        if digits_only {
            return parse_epoch_decimal(s, 9);
        }
    }
    parse_iso8601_ms(s)
}

/// Epoch numbers are told apart by magnitude: below 1e11 they are seconds
/// (1e11 s is the year 5138), below 1e14 milliseconds, below 1e17
/// microseconds, otherwise nanoseconds.
fn epoch_integer_to_ms(n: i128) -> Option<i64> {
    let magnitude = n.unsigned_abs();
    let ms = if magnitude < 100_000_000_000 {
        n.checked_mul(1000)?
    } else if magnitude < 100_000_000_000_000 {
        n
    } else if magnitude < 100_000_000_000_000_000 {
        n / 1000
    } else {
        n / 1_000_000
    };
    i64::try_from(ms).ok()
}

/// Parses `[-]digits[.digits]` as an epoch number. `min_int_digits` guards
/// numeric strings against being misread as times.
fn parse_epoch_decimal(s: &str, min_int_digits: usize) -> Option<i64> {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, f),
        None => (unsigned, ""),
    };
    if int_part.len() < min_int_digits.max(1)
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: i128 = int_part.parse().ok()?;
    let ms = if int < 100_000_000_000 {
        // Seconds with an optional fraction: keep milliseconds, truncating.
        let frac_ms = frac_to_ms(frac_part.as_bytes());
        int * 1000 + i128::from(frac_ms)
    } else {
        // Milliseconds or finer: the fraction is below a millisecond.
        i128::from(epoch_integer_to_ms(int)?)
    };
    i64::try_from(if negative { -ms } else { ms }).ok()
}

/// The first three fractional digits as milliseconds (`"4"` → 400,
/// `"037299"` → 37).
fn frac_to_ms(digits: &[u8]) -> u32 {
    let mut ms = 0u32;
    for i in 0..3 {
        let d = digits.get(i).map_or(0, |b| u32::from(b - b'0'));
        ms = ms * 10 + d;
    }
    ms
}

/// Parses an ISO-8601 / RFC 3339 date or date-time to milliseconds since the
/// Unix epoch (UTC).
///
/// Accepted forms: `YYYY-MM-DD`, then optionally `T`, `t` or a space and
/// `hh:mm`, `hh:mm:ss` or `hh:mm:ss.fff…` (any number of fraction digits, `.` or
/// `,`; truncated to milliseconds), then optionally a zone: `Z`, `z`, `UTC`,
/// `GMT`, `±hh`, `±hhmm` or `±hh:mm`, optionally after one space. No zone means
/// UTC, which is how Windows exports write `TimeCreated`. Calendar fields are
/// validated (no 30 February; a leap second `:60` is accepted and counted as
/// the next second).
pub fn parse_iso8601_ms(s: &str) -> Option<i64> {
    let mut c = Cursor {
        bytes: s.trim().as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)? as i64;
    c.expect(b'-')?;
    let month = c.digits(2)?;
    c.expect(b'-')?;
    let day = c.digits(2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let (mut hour, mut minute, mut second, mut millis, mut offset_s) = (0, 0, 0, 0, 0i64);
    if !c.at_end() {
        match c.next()? {
            b'T' | b't' | b' ' => {}
            _ => return None,
        }
        hour = c.digits(2)?;
        c.expect(b':')?;
        minute = c.digits(2)?;
        if c.eat(b':') {
            second = c.digits(2)?;
            if c.eat(b'.') || c.eat(b',') {
                let start = c.pos;
                while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                    c.pos += 1;
                }
                if c.pos == start {
                    return None;
                }
                millis = frac_to_ms(&c.bytes[start..c.pos]);
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        offset_s = c.zone()?;
        if !c.at_end() {
            return None;
        }
    }
    let days = days_from_civil(year, month, day);
    let seconds =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
            - offset_s;
    Some(seconds * 1000 + i64::from(millis))
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with millisecond
/// precision: `2026-11-20T08:00:00.000Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), valid for every year an `i64` of days can hold.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A byte cursor for the ISO-8601 parser.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, expected: u8) -> bool {
        if self.peek() == Some(expected) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, expected: u8) -> Option<()> {
        self.eat(expected).then_some(())
    }

    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let slice = self.bytes.get(self.pos..self.pos + n)?;
        let mut value = 0u32;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos += n;
        Some(value)
    }

    fn rest_eq_ignore_case(&self, s: &str) -> bool {
        self.bytes
            .get(self.pos..)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(s.as_bytes()))
    }

    /// An optional zone designator; returns the offset east of UTC in seconds.
    fn zone(&mut self) -> Option<i64> {
        if self.at_end() {
            return Some(0);
        }
        if self.peek() == Some(b' ') {
            self.pos += 1;
        }
        if self.eat(b'Z') || self.eat(b'z') {
            return Some(0);
        }
        if self.rest_eq_ignore_case("UTC") || self.rest_eq_ignore_case("GMT") {
            self.pos = self.bytes.len();
            return Some(0);
        }
        let sign = match self.next()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let hours = self.digits(2)?;
        let colon = self.eat(b':');
        let minutes = if colon || !self.at_end() {
            self.digits(2)?
        } else {
            0
        };
        if hours > 23 || minutes > 59 {
            return None;
        }
        Some(sign * (i64::from(hours) * 3600 + i64::from(minutes) * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // --- lookup / value_text -------------------------------------------------

    #[test]
    fn lookup_follows_dotted_paths_and_prefers_verbatim_keys() {
        let doc = json!({
            "userIdentity": {"userName": "pedro", "sessionContext": {"attributes": {"mfa": "true"}}},
            "id.orig_h": "10.0.0.1",
            "id": {"orig_h": "shadowed"},
            "resources": [{"ARN": "arn:aws:s3:::bucket"}],
            "a": {"b.c": {"d": 1}},
        });
        assert_eq!(lookup(&doc, "userIdentity.userName"), Some(&json!("pedro")));
        assert_eq!(
            lookup(&doc, "userIdentity.sessionContext.attributes.mfa"),
            Some(&json!("true"))
        );
        assert_eq!(lookup(&doc, "id.orig_h"), Some(&json!("10.0.0.1")));
        assert_eq!(
            lookup(&doc, "resources.0.ARN"),
            Some(&json!("arn:aws:s3:::bucket"))
        );
        assert_eq!(lookup(&doc, "a.b.c.d"), Some(&json!(1)));
        assert_eq!(lookup(&doc, "resources.1.ARN"), None);
        assert_eq!(lookup(&doc, "userIdentity.missing"), None);
        assert_eq!(lookup(&doc, ""), None);
        assert_eq!(lookup(&json!("scalar"), "x"), None);
    }

    #[test]
    fn lookup_accepts_raw_evtx_paths_on_flattened_events() {
        let doc = json!({"TargetUserName": "admin", "Computer": "WIN"});
        assert_eq!(
            lookup(&doc, "Event.EventData.TargetUserName"),
            Some(&json!("admin"))
        );
        assert_eq!(
            lookup(&doc, "EventData.TargetUserName"),
            Some(&json!("admin"))
        );
        assert_eq!(lookup(&doc, "System.Computer"), Some(&json!("WIN")));
        assert_eq!(lookup(&doc, "EventData."), None);
        // A genuinely nested document resolves the nested path first.
        let nested = json!({"EventData": {"TargetUserName": "nested"}, "TargetUserName": "flat"});
        assert_eq!(
            lookup(&nested, "EventData.TargetUserName"),
            Some(&json!("nested"))
        );
    }

    #[test]
    fn all_values_text_lists_every_scalar_once_per_line() {
        let doc = json!({
            "message": "Failed password for root",
            "pid": 4242,
            "nested": {"ok": true, "none": null, "list": ["a", {"b": "c"}]},
            "empty": "",
        });
        assert_eq!(
            all_values_text(&doc).as_deref(),
            Some("Failed password for root\n4242\ntrue\na\nc")
        );
        assert_eq!(all_values_text(&json!({"x": null})), None);
    }

    #[test]
    fn value_text_renders_every_json_kind() {
        assert_eq!(value_text(&json!("Abc")).as_deref(), Some("Abc"));
        assert!(matches!(value_text(&json!("x")), Some(Cow::Borrowed(_))));
        assert_eq!(value_text(&json!(4625)).as_deref(), Some("4625"));
        assert_eq!(value_text(&json!(-3)).as_deref(), Some("-3"));
        assert_eq!(
            value_text(&json!(1588205199.82437)).as_deref(),
            Some("1588205199.82437")
        );
        assert_eq!(value_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(value_text(&json!(false)).as_deref(), Some("false"));
        assert_eq!(value_text(&Value::Null), None);
        assert_eq!(value_text(&json!(["a", 1])).as_deref(), Some(r#"["a",1]"#));
        assert_eq!(
            value_text(&json!({"k": "v"})).as_deref(),
            Some(r#"{"k":"v"}"#)
        );
    }

    // --- normalize -----------------------------------------------------------

    /// A record from `windows/evtx/T1110_accountrestore_local_bruteforce_4625.jsonl`
    /// (EVTX-to-MITRE-Attack, CC0-1.0), trimmed.
    const EVTX_4625: &str = r##"{"Event":{"#attributes":{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"},"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Security-Auditing","Guid":"54849625-5478-4994-A5BA-3E3B0328C30D"}},"EventID":4625,"Version":0,"Level":0,"Task":12544,"Opcode":0,"Keywords":"0x8010000000000000","TimeCreated":{"#attributes":{"SystemTime":"2023-09-25T20:39:50.822397Z"}},"EventRecordID":11286,"Correlation":{"#attributes":{"ActivityID":"7A9AC068-ECD0-0001-9CC0-9A7AD0ECD901"}},"Execution":{"#attributes":{"ProcessID":760,"ThreadID":804}},"Channel":"Security","Computer":"WIN","Security":null},"EventData":{"SubjectUserName":"Admin","TargetUserName":"Admin","TargetDomainName":"WIN","Status":"0xc000006d","LogonType":2,"IpAddress":"-","IpPort":"-"}}}"##;

    #[test]
    fn normalize_flattens_evtx_system_and_event_data() {
        let doc: Value = serde_json::from_str(EVTX_4625).expect("fixture is JSON");
        let flat = normalize(doc);
        assert_eq!(flat["EventID"], json!(4625));
        assert_eq!(flat["Channel"], json!("Security"));
        assert_eq!(flat["Computer"], json!("WIN"));
        assert_eq!(
            flat["Provider_Name"],
            json!("Microsoft-Windows-Security-Auditing")
        );
        assert_eq!(
            flat["Provider_Guid"],
            json!("54849625-5478-4994-A5BA-3E3B0328C30D")
        );
        assert_eq!(flat["Execution_ProcessID"], json!(760));
        assert_eq!(flat["Execution_ThreadID"], json!(804));
        assert_eq!(
            flat["Correlation_ActivityID"],
            json!("7A9AC068-ECD0-0001-9CC0-9A7AD0ECD901")
        );
        assert_eq!(flat["TimeCreated"], json!("2023-09-25T20:39:50.822397Z"));
        assert_eq!(flat["TargetUserName"], json!("Admin"));
        assert_eq!(flat["LogonType"], json!(2));
        assert_eq!(flat["EventRecordID"], json!(11286));
        assert!(
            flat.get("Security").is_none(),
            "null System fields are dropped"
        );
        assert!(flat.get("Event").is_none());
        assert_eq!(event_timestamp_ms(&flat), Some(1_695_674_390_822));
    }

    #[test]
    fn normalize_handles_event_id_with_qualifiers_and_data_arrays() {
        let doc = json!({"Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "Service Control Manager", "EventSourceName": "Service Control Manager"}},
                "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": "7036"},
                "TimeCreated": {"#attributes": {"SystemTime": "2021-04-21T09:40:32.1Z"}},
                "Channel": "System", "Computer": "fs01"
            },
            "EventData": {"Data": [
                {"#attributes": {"Name": "param1"}, "#text": "Windows Update"},
                {"#attributes": {"Name": "param2"}, "#text": "running"},
                {"#attributes": {"Name": "Empty"}}
            ], "Binary": "7700"}
        }});
        let flat = normalize(doc);
        assert_eq!(flat["EventID"], json!(7036));
        assert_eq!(flat["EventID_Qualifiers"], json!(16384));
        assert_eq!(flat["Provider_Name"], json!("Service Control Manager"));
        assert_eq!(
            flat["Provider_EventSourceName"],
            json!("Service Control Manager")
        );
        assert_eq!(flat["param1"], json!("Windows Update"));
        assert_eq!(flat["param2"], json!("running"));
        assert_eq!(flat["Empty"], Value::Null);
        assert_eq!(flat["Binary"], json!("7700"));
        assert_eq!(event_timestamp_ms(&flat), Some(1_618_998_032_100));
    }

    #[test]
    fn normalize_handles_single_data_entry_unnamed_data_and_null_event_data() {
        let single = normalize(json!({"Event": {
            "System": {"EventID": 1, "Computer": "a"},
            "EventData": {"Data": {"#attributes": {"Name": "Only"}, "#text": "one"}}
        }}));
        assert_eq!(single["Only"], json!("one"));

        let unnamed = normalize(json!({"Event": {
            "System": {"EventID": 2, "Computer": "a"},
            "EventData": {"Data": {"#text": ["first", "second"]}}
        }}));
        assert_eq!(unnamed["Data"], json!(["first", "second"]));

        let unnamed_one = normalize(json!({"Event": {
            "System": {"EventID": 3, "Computer": "a"},
            "EventData": {"Data": "lonely"}
        }}));
        assert_eq!(unnamed_one["Data"], json!("lonely"));

        let null = normalize(json!({"Event": {
            "System": {"EventID": 4, "Computer": "a", "Channel": "Security"},
            "EventData": null
        }}));
        assert_eq!(
            null,
            json!({"EventID": 4, "Computer": "a", "Channel": "Security"})
        );
    }

    #[test]
    fn normalize_flattens_user_data_and_keeps_other_sections() {
        let flat = normalize(json!({"Event": {
            "#attributes": {"xmlns": "x"},
            "System": {"EventID": 1102, "Channel": "Security", "Computer": "fs01"},
            "UserData": {"LogFileCleared": {"#attributes": {"xmlns": "y"}, "SubjectUserName": "admmig", "SubjectDomainName": "OFFSEC"}},
            "RenderingInfo": {"Message": "The audit log was cleared."}
        }, "record_id": 7}));
        assert_eq!(flat["SubjectUserName"], json!("admmig"));
        assert_eq!(flat["SubjectDomainName"], json!("OFFSEC"));
        assert_eq!(
            flat["RenderingInfo"]["Message"],
            json!("The audit log was cleared.")
        );
        assert_eq!(flat["record_id"], json!(7));
        assert!(flat.get("#attributes").is_none());
    }

    #[test]
    fn normalize_keeps_clashing_fields_under_a_section_prefix() {
        let flat = normalize(json!({"Event": {
            "System": {"EventID": 1, "Version": 2, "Computer": "a"},
            "EventData": {"Version": "5", "Computer": "a"}
        }}));
        assert_eq!(flat["Version"], json!(2));
        assert_eq!(flat["EventData_Version"], json!("5"));
        // Same value: no duplicate.
        assert!(flat.get("EventData_Computer").is_none());
    }

    #[test]
    fn normalize_leaves_other_documents_unchanged() {
        let mordor = json!({"EventID": 4624, "Hostname": "WORKSTATION5", "Event": "not an object"});
        assert_eq!(normalize(mordor.clone()), mordor);
        let no_system = json!({"Event": {"EventData": {"x": 1}}});
        assert_eq!(normalize(no_system.clone()), no_system);
        assert_eq!(normalize(json!([1, 2])), json!([1, 2]));
        assert_eq!(normalize(json!("s")), json!("s"));
    }

    // --- timestamps ----------------------------------------------------------

    #[test]
    fn parses_rfc3339_with_fraction_and_zone_forms() {
        let base = 1_603_007_406_000; // 2020-10-18T07:50:06Z
        assert_eq!(parse_iso8601_ms("2020-10-18T07:50:06Z"), Some(base));
        assert_eq!(
            parse_iso8601_ms("2020-10-18T07:50:06.220Z"),
            Some(base + 220)
        );
        assert_eq!(parse_iso8601_ms("2020-10-18t07:50:06.2z"), Some(base + 200));
        assert_eq!(
            parse_iso8601_ms("2020-10-18T07:50:06.220397123Z"),
            Some(base + 220)
        );
        assert_eq!(parse_iso8601_ms("2020-10-18T07:50:06,5Z"), Some(base + 500));
        assert_eq!(
            parse_iso8601_ms("2020-10-18T07:50:06.220+00:00"),
            Some(base + 220)
        );
        assert_eq!(parse_iso8601_ms("2020-10-18T09:50:06+02:00"), Some(base));
        assert_eq!(parse_iso8601_ms("2020-10-18T13:20:06+0530"), Some(base));
        assert_eq!(parse_iso8601_ms("2020-10-18T09:50:06+02"), Some(base));
        assert_eq!(parse_iso8601_ms("2020-10-18T07:50:06 UTC"), Some(base));
        assert_eq!(parse_iso8601_ms("2020-10-18T07:50Z"), Some(base - 6000));
        assert_eq!(parse_iso8601_ms("2020-10-18"), Some(base - 28_206_000));
    }

    #[test]
    fn parses_negative_offsets_like_suricata() {
        // 2018-03-24T14:37:19.037299-06:00 is 20:37:19.037 UTC.
        assert_eq!(
            parse_iso8601_ms("2018-03-24T14:37:19.037299-0600"),
            Some(1_521_923_839_037)
        );
        assert_eq!(
            parse_iso8601_ms("2018-03-24T14:37:19.037299-06:00"),
            Some(1_521_923_839_037)
        );
        // An offset that crosses midnight backwards.
        assert_eq!(
            parse_iso8601_ms("2015-12-31T23:30:00-01:00"),
            parse_iso8601_ms("2016-01-01T00:30:00Z")
        );
    }

    #[test]
    fn parses_zone_less_times_as_utc() {
        assert_eq!(
            parse_iso8601_ms("2020-10-18 07:49:39"),
            Some(1_603_007_379_000)
        );
        assert_eq!(
            parse_iso8601_ms("2020-10-18 07:50:06.220"),
            Some(1_603_007_406_220)
        );
    }

    #[test]
    fn validates_calendar_and_clock_fields() {
        assert!(parse_iso8601_ms("2020-02-29T00:00:00Z").is_some());
        assert!(parse_iso8601_ms("2000-02-29T00:00:00Z").is_some());
        for bad in [
            "2021-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2020-13-01T00:00:00Z",
            "2020-00-10T00:00:00Z",
            "2020-04-31T00:00:00Z",
            "2020-10-18T24:00:00Z",
            "2020-10-18T23:60:00Z",
            "2020-10-18T23:59:61Z",
            "2020-10-18T07:50:06.Z",
            "2020-10-18T07:50:06+2400",
            "2020-10-18T07:50:06+01:60",
            "2020-10-18T07:50:06Zjunk",
            "2020-10-18X07:50:06Z",
            "2020-1-18",
            "20201018",
            "garbage",
            "",
        ] {
            assert_eq!(parse_iso8601_ms(bad), None, "{bad:?} must be rejected");
        }
        // A leap second reads as the next second rather than failing.
        assert_eq!(
            parse_iso8601_ms("2016-12-31T23:59:60Z"),
            parse_iso8601_ms("2017-01-01T00:00:00Z")
        );
    }

    #[test]
    fn handles_dates_before_the_epoch() {
        assert_eq!(parse_iso8601_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601_ms("1969-12-31T23:59:59.500Z"), Some(-500));
        assert_eq!(
            parse_iso8601_ms("1900-01-01T00:00:00Z"),
            Some(-2_208_988_800_000)
        );
    }

    #[test]
    fn format_and_parse_round_trip_across_leap_years() {
        // Every day from 1899 to 2101 at a varying time of day.
        let start = days_from_civil(1899, 1, 1);
        let end = days_from_civil(2101, 12, 31);
        for day in start..=end {
            let ms = day * 86_400_000 + (day.rem_euclid(86_400)) * 997;
            let text = format_rfc3339_ms(ms);
            assert_eq!(parse_iso8601_ms(&text), Some(ms), "{text}");
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(
            format_rfc3339_ms(1_795_161_600_000),
            "2026-11-20T08:00:00.000Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_epoch_numbers_by_magnitude() {
        let ts = |v: Value| event_timestamp_ms(&json!({ "ts": v }));
        assert_eq!(ts(json!(1588205199.82437)), Some(1_588_205_199_824));
        assert_eq!(ts(json!(1588205199)), Some(1_588_205_199_000));
        assert_eq!(ts(json!(1588205199824u64)), Some(1_588_205_199_824));
        assert_eq!(ts(json!(1588205199824123u64)), Some(1_588_205_199_824));
        assert_eq!(ts(json!(1588205199824123456u64)), Some(1_588_205_199_824));
        assert_eq!(ts(json!("1692161622.036086")), Some(1_692_161_622_036));
        assert_eq!(ts(json!("1692161622")), Some(1_692_161_622_000));
        assert_eq!(ts(json!(0.5)), Some(500));
        // Short numeric strings are not times.
        assert_eq!(ts(json!("2020")), None);
        assert_eq!(ts(json!("1.2.3")), None);
        assert_eq!(
            parse_timestamp_ms("  2020-10-18T07:50:06Z "),
            Some(1_603_007_406_000)
        );
    }

    #[test]
    fn picks_the_first_usable_field_in_priority_order() {
        // NXLog: `EventTime` is local time; `@timestamp` must win.
        let nxlog =
            json!({"@timestamp": "2020-08-05T06:09:29.626Z", "EventTime": "2020-08-05 02:09:26"});
        assert_eq!(event_timestamp_ms(&nxlog), Some(1_596_607_769_626));
        // Mordor pipeline (a): only a zone-less TimeCreated.
        let mordor = json!({"TimeCreated": "2020-10-18 07:50:06.220", "EventID": 4689});
        assert_eq!(event_timestamp_ms(&mordor), Some(1_603_007_406_220));
        // Sysmon UtcTime.
        assert_eq!(
            event_timestamp_ms(&json!({"UtcTime": "2020-09-17 03:39:22.392"})),
            Some(1_600_313_962_392)
        );
        // Suricata.
        assert_eq!(
            event_timestamp_ms(&json!({"timestamp": "2018-03-24T14:37:19.037299-0600"})),
            Some(1_521_923_839_037)
        );
        // CloudTrail.
        assert_eq!(
            event_timestamp_ms(&json!({"eventTime": "2020-09-14T00:44:23Z"})),
            Some(1_600_044_263_000)
        );
        // Azure Syslog rows.
        assert_eq!(
            event_timestamp_ms(
                &json!({"TimeGenerated": "2022-05-11T18:10:20.4Z", "EventTime": "2022-05-11T18:10:20Z"})
            ),
            Some(1_652_292_620_400)
        );
        // Zeek with an ISO `ts`.
        assert_eq!(
            event_timestamp_ms(&json!({"ts": "2020-04-30T00:06:38.123456Z"})),
            Some(1_588_205_198_123)
        );
        // An unusable higher-priority field falls through to the next one.
        assert_eq!(
            event_timestamp_ms(&json!({"@timestamp": "not a time", "ts": 1.5})),
            Some(1500)
        );
        // Raw, unnormalised EVTX.
        assert_eq!(
            event_timestamp_ms(
                &json!({"Event": {"System": {"TimeCreated": {"#attributes": {"SystemTime": "2021-05-20T12:49:31.863181Z"}}}}})
            ),
            Some(1_621_514_971_863)
        );
        assert_eq!(event_timestamp_ms(&json!({"message": "no time"})), None);
    }

    /// Every record of the shared test corpus, where present, has a timestamp
    /// after normalisation.
    #[test]
    fn every_shared_corpus_record_has_a_timestamp() {
        let Some(files) = quarry_testdata::shared_json_logs() else {
            return;
        };
        let (mut checked, mut evtx) = (0usize, 0usize);
        for path in files {
            let text = std::fs::read_to_string(&path).expect("readable corpus file");
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let doc: Value = serde_json::from_str(line).expect("corpus line is JSON");
                let was_evtx = doc.get("Event").is_some_and(|e| e.get("System").is_some());
                let doc = normalize(doc);
                if was_evtx {
                    // Flattened: the Sigma names are at top level.
                    for field in ["EventID", "Channel", "Computer", "Provider_Name"] {
                        assert!(
                            doc.get(field).is_some(),
                            "{}:{}: no {field} after normalize",
                            path.display(),
                            i + 1
                        );
                    }
                    assert!(doc.get("Event").is_none());
                    evtx += 1;
                }
                let ts = event_timestamp_ms(&doc);
                assert!(
                    ts.is_some_and(|t| t > 1_400_000_000_000 && t < 1_800_000_000_000),
                    "{}:{}: no plausible timestamp ({ts:?})",
                    path.display(),
                    i + 1
                );
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} records checked");
        assert!(evtx > 200, "only {evtx} EVTX records checked");
    }
}
