//! Conformance tests: every stage and function on fixed events, parse
//! errors, the plan's split, pushdown soundness, and one partition versus
//! many merged.

use serde_json::{Map, Value as Json, json};

use crate::plan::{Clause, MatchOp};
use crate::{Error, JsonEvent, Partial, Plan, Table, TextEvent, Value, compile};

/// Fixed events: (time in ms, fields).
fn fixture() -> Vec<(i64, Map<String, Json>)> {
    let events = [
        (
            1_000,
            json!({"EventID": 4688, "Computer": "WS01", "User": "alice", "Image": "C:\\Windows\\System32\\nltest.exe", "CommandLine": "nltest /dclist:corp", "Bytes": 100, "SourceIp": "10.1.2.3", "Tags": ["Recon", "AD"]}),
        ),
        (
            2_000,
            json!({"EventID": "4688", "Computer": "ws01", "User": "Bob", "Image": "C:\\Windows\\System32\\rundll32.exe", "CommandLine": "rundll32.exe shell32.dll", "Bytes": "250.5", "SourceIp": "192.168.1.20"}),
        ),
        (
            3_000,
            json!({"EventID": 4624, "Computer": "DC01", "User": "alice", "LogonType": 3, "Bytes": -50, "SourceIp": "10.200.0.1", "Tags": []}),
        ),
        (
            3_600_000 + 500,
            json!({"EventID": 4624, "Computer": "DC01", "User": "ÉMILE", "LogonType": "3", "Bytes": null, "SourceIp": "fe80::1"}),
        ),
        (
            7_200_000 + 1,
            json!({"EventID": 4625, "Computer": "WS02", "User": "émile", "Image": "C:\\Tools\\RUNDLL32.EXE", "CommandLine": "cG93ZXJzaGVsbA==", "SourceIp": "not an ip", "Process Name": "x y", "id": {"orig_h": "10.0.0.9"}}),
        ),
        (
            7_200_000 + 2,
            json!({"EventID": 1, "Computer": "WS02", "Image": "/usr/bin/curl", "Bytes": "04688", "User": "\u{212A}im"}),
        ),
    ];
    events
        .into_iter()
        .map(|(t, v)| match v {
            Json::Object(map) => (t, map),
            _ => unreachable!("fixtures are objects"),
        })
        .collect()
}

fn run_on(query: &str, events: &[(i64, Map<String, Json>)]) -> Table {
    let plan = compile(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let views: Vec<JsonEvent<'_>> = events
        .iter()
        .map(|(t, map)| JsonEvent {
            map,
            time_ms: Some(*t),
        })
        .collect();
    plan.run(views.iter()).expect("runs")
}

fn run(query: &str) -> Table {
    run_on(query, &fixture())
}

/// The values of column `name`.
fn col(table: &Table, name: &str) -> Vec<Value> {
    let i = table
        .columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", table.columns));
    table.rows.iter().map(|row| row[i].clone()).collect()
}

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

fn n(x: f64) -> Value {
    Value::Num(x)
}

/// Users of the events a `where` keeps, in time order.
fn users(condition: &str) -> Vec<String> {
    let table = run(&format!("where {condition} | fields User"));
    if table.rows.is_empty() {
        return Vec::new();
    }
    col(&table, "User")
        .into_iter()
        .map(|v| v.text().unwrap_or_else(|| "-".to_owned()))
        .collect()
}

fn parse_error(query: &str) -> (String, (usize, usize)) {
    let err = compile(query).expect_err(query);
    let position = err.position().expect("a parse error");
    (err.to_string(), position)
}

// ---- parse errors ----

#[test]
fn a_missing_comparison_points_at_the_column_with_a_hint() {
    let (text, position) = parse_error("where EventID 4688 | stats count()");
    assert_eq!(position, (1, 15));
    assert_eq!(
        text,
        "expected a comparison after `EventID`, found the number 4688 (line 1, column 15)\n  \
         where EventID 4688 | stats count()\n                \
         ^\n  hint: did you mean `==`?"
    );
}

#[test]
fn parse_errors_name_the_problem_and_suggest_the_fix() {
    let cases: &[(&str, (usize, usize), &str, &str)] = &[
        (
            "where EventID = 4688",
            (1, 15),
            "`=` is not a comparison",
            "compare with `==`",
        ),
        (
            "stast count() by User",
            (1, 1),
            "unknown stage `stast`",
            "did you mean `stats`?",
        ),
        (
            "where lowr(User) == \"a\"",
            (1, 7),
            "unknown function `lowr`",
            "did you mean `lower`?",
        ),
        (
            "stats cnt() by User",
            (1, 7),
            "unknown aggregate `cnt`",
            "did you mean `count`?",
        ),
        (
            "where dc(User) > 1",
            (1, 7),
            "unknown function `dc`",
            "is an aggregate",
        ),
        (
            "where User == \"alice",
            (1, 15),
            "unterminated string",
            "close it with \"",
        ),
        (
            "where User matches \"(\"",
            (1, 20),
            "invalid regular expression",
            "unclosed group",
        ),
        (
            "where SourceIp cidr \"10.0.0.0/33\"",
            (1, 21),
            "is not a network",
            "prefix length",
        ),
        (
            "where cidr(SourceIp, \"nope\")",
            (1, 7),
            "is not a network",
            "address",
        ),
        (
            "where User == 1 |",
            (1, 18),
            "expected a stage",
            "must be followed by a stage",
        ),
        (
            "where User contian \"x\"",
            (1, 12),
            "expected a comparison after `User`",
            "did you mean `contains`?",
        ),
        (
            "head 5 | stats count()",
            (1, 1),
            "`head` before `stats` is not supported",
            "move `head` after `stats`",
        ),
        (
            "where x == 1 | dedup User | stats count()",
            (1, 16),
            "`dedup` before `stats`",
            "dc(field)",
        ),
        (
            "eval x == 1",
            (1, 8),
            "expected `=` after `eval x`",
            "single `=`",
        ),
        (
            "where (User == \"a\"",
            (1, 19),
            "expected `)` to close `(`",
            "",
        ),
        (
            "stats sum() by User",
            (1, 7),
            "`sum()` needs a field",
            "sum(field)",
        ),
        (
            "where User in (\"a\", User)",
            (1, 21),
            "`in (...)` takes literals",
            "",
        ),
        (
            "timechart span=1y count()",
            (1, 17),
            "unknown span unit `y`",
            "units",
        ),
        ("top 0 User", (1, 5), "whole number from 1", ""),
        (
            "where Image == \"x\"\n  | stats count() bye User",
            (2, 19),
            "unexpected `bye`",
            "separate stages",
        ),
    ];
    for (query, position, message, hint) in cases {
        let (text, at) = parse_error(query);
        assert_eq!(at, *position, "{query}: {text}");
        assert!(text.contains(message), "{query}: {text}");
        assert!(text.contains(hint), "{query}: {text}");
        assert!(text.contains('^'), "{query}: {text}");
    }
}

#[test]
fn a_multi_line_query_shows_the_line_of_the_error() {
    let err = compile("where User == \"a\"\n| stats count() by\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("(line 2, column 19)"), "{text}");
    assert!(
        text.contains("\n  | stats count() by\n                    ^"),
        "{text}"
    );
}

// ---- where ----

#[test]
fn equality_is_case_insensitive_and_numbers_compare_by_value() {
    assert_eq!(users("Computer == \"ws01\""), ["alice", "Bob"]);
    assert_eq!(users("Computer === \"WS01\""), ["alice"]);
    assert_eq!(
        users("Computer !== \"WS01\""),
        ["Bob", "alice", "ÉMILE", "émile", "\u{212A}im"]
    );
    // 4688 as a JSON number and as a string are both the number 4688.
    assert_eq!(users("EventID == 4688"), ["alice", "Bob"]);
    assert_eq!(users("EventID == \"4688\""), ["alice", "Bob"]);
    assert_eq!(users("4688 == EventID"), ["alice", "Bob"]);
    // `04688` is not a plain decimal: text, not equal to the number.
    assert_eq!(users("Bytes == 4688"), Vec::<String>::new());
    assert_eq!(users("Bytes == \"04688\""), ["\u{212A}im"]);
    assert_eq!(users("Bytes == 250.5"), ["Bob"]);
    assert_eq!(users("LogonType == 3"), ["alice", "ÉMILE"]);
}

#[test]
fn missing_and_null_fields_fail_comparisons_and_pass_their_negations() {
    // LogonType is missing on four events; Bytes is null on one.
    assert_eq!(
        users("LogonType != 3"),
        ["alice", "Bob", "émile", "\u{212A}im"]
    );
    assert_eq!(users("not LogonType == 3"), users("LogonType != 3"));
    assert_eq!(users("Bytes > -1000"), ["alice", "Bob", "alice"]);
    assert_eq!(users("not Bytes > -1000"), ["ÉMILE", "émile", "\u{212A}im"]);
    assert_eq!(users("Bytes == null"), ["ÉMILE", "émile"]);
    assert_eq!(users("isnull(Bytes)"), ["ÉMILE", "émile"]);
    assert_eq!(
        users("exists(Image)"),
        ["alice", "Bob", "émile", "\u{212A}im"]
    );
    assert_eq!(users("Nothing contains \"\""), Vec::<String>::new());
}

#[test]
fn ordering_compares_numbers_numerically_and_text_as_folded_text() {
    // "250.5" (a numeric string) > 100 numerically; "04688" is text.
    assert_eq!(users("Bytes > 99"), ["alice", "Bob"]);
    assert_eq!(users("Bytes <= 100"), ["alice", "alice"]);
    assert_eq!(users("Bytes >= -50 and Bytes < 0"), ["alice"]);
    // Text against text: case-folded byte order.
    assert_eq!(users("Computer < \"dc02\""), ["alice", "ÉMILE"]);
    // A number is never less or greater than non-numeric text.
    assert_eq!(users("User > 1"), Vec::<String>::new());
    assert_eq!(users("User < 1"), Vec::<String>::new());
    assert_eq!(
        users("User >= \"b\""),
        ["Bob", "ÉMILE", "émile", "\u{212A}im"]
    );
}

#[test]
fn text_operators_fold_case_unless_cs_and_fold_unicode() {
    assert_eq!(
        users("Image endswith \"\\\\rundll32.exe\""),
        ["Bob", "émile"]
    );
    assert_eq!(users("Image endswith_cs \"\\\\rundll32.exe\""), ["Bob"]);
    // Single backslashes stay: only quotes and backslashes escape.
    assert_eq!(
        users("Image startswith \"c:\\windows\\system32\""),
        ["alice", "Bob"]
    );
    assert_eq!(
        users("Image startswith_cs \"c:\\\\\""),
        Vec::<String>::new()
    );
    assert_eq!(users("CommandLine contains \"NLTEST\""), ["alice"]);
    assert_eq!(
        users("CommandLine contains_cs \"NLTEST\""),
        Vec::<String>::new()
    );
    // Unicode case folding: É = é.
    assert_eq!(users("User == \"émile\""), ["ÉMILE", "émile"]);
    assert_eq!(users("User === \"émile\""), ["émile"]);
    assert_eq!(users("User contains \"MIL\""), ["ÉMILE", "émile"]);
    // The Kelvin sign does not fold to an ASCII k (the host prefilter would
    // not match it either).
    assert_eq!(users("User == \"kim\""), Vec::<String>::new());
    assert_eq!(users("User == \"\u{212A}IM\""), ["\u{212A}im"]);
}

#[test]
fn matches_in_cidr_and_lists() {
    assert_eq!(
        users("Image matches \"(?:nltest|curl)(\\\\.exe)?$\""),
        ["alice", "\u{212A}im"]
    );
    assert_eq!(users("Image matches \"RUNDLL32\""), ["Bob", "émile"]);
    assert_eq!(users("Image matches_cs \"RUNDLL32\""), ["émile"]);
    assert_eq!(
        users("Computer in (\"ws01\", \"dc01\")"),
        ["alice", "Bob", "alice", "ÉMILE"]
    );
    assert_eq!(
        users("Computer in_cs (\"ws01\", \"DC01\")"),
        ["Bob", "alice", "ÉMILE"]
    );
    assert_eq!(
        users("EventID in (4624, 1)"),
        ["alice", "ÉMILE", "\u{212A}im"]
    );
    assert_eq!(users("SourceIp cidr \"10.0.0.0/8\""), ["alice", "alice"]);
    assert_eq!(users("cidr(SourceIp, \"10.0.0.0/9\")"), ["alice"]);
    assert_eq!(users("cidr(SourceIp, \"fe80::/10\")"), ["ÉMILE"]);
    assert_eq!(users("cidr(SourceIp, \"192.168.1.20\")"), ["Bob"]);
    assert_eq!(
        users("not SourceIp cidr \"0.0.0.0/0\""),
        ["ÉMILE", "émile", "\u{212A}im"]
    );
    // An array field holds when one element does; `!=` when none is equal.
    assert_eq!(users("Tags == \"recon\""), ["alice"]);
    assert_eq!(
        users("Tags != \"recon\""),
        ["Bob", "alice", "ÉMILE", "émile", "\u{212A}im"]
    );
    assert_eq!(users("exists(Tags)"), ["alice"]);
}

#[test]
fn boolean_logic_precedence_and_parentheses() {
    assert_eq!(
        users("EventID == 4624 or EventID == 1 and User == \"nobody\""),
        ["alice", "ÉMILE"]
    );
    assert_eq!(
        users("(EventID == 4624 or EventID == 1) and Computer == \"ws02\""),
        ["\u{212A}im"]
    );
    assert_eq!(
        users("not (EventID == 4624 or EventID == 4688)"),
        ["émile", "\u{212A}im"]
    );
    assert_eq!(
        users("NOT EventID == 4624 AND Computer == \"ws02\""),
        ["émile", "\u{212A}im"]
    );
    assert_eq!(users("! exists(Image)"), ["alice", "ÉMILE"]);
    assert_eq!(users("where_missing_field"), Vec::<String>::new());
}

#[test]
fn quoted_field_names_and_nested_paths() {
    assert_eq!(users("`Process Name` == \"X Y\""), ["émile"]);
    assert_eq!(users("id.orig_h cidr \"10.0.0.0/8\""), ["émile"]);
    assert_eq!(users("`id.orig_h` == \"10.0.0.9\""), ["émile"]);
    let table = run("where EventID == 4625 | fields \"Process Name\", `id.orig_h`");
    assert_eq!(table.columns, ["Process Name", "id.orig_h"]);
    assert_eq!(table.rows, [vec![s("x y"), s("10.0.0.9")]]);
}

// ---- eval ----

#[test]
fn eval_arithmetic_concat_and_nulls() {
    let table = run(
        "where EventID == 4688 | eval kb = Bytes / 1000, twice = Bytes * 2 + 1, neg = -Bytes, \
         rem = 7 % 3, zero = Bytes / 0, label = Computer || \"/\" || User, none = Missing || \"x\", \
         text = User + 1 | fields kb, twice, neg, rem, zero, label, none, text",
    );
    assert_eq!(
        table.rows,
        [
            vec![
                n(0.1),
                n(201.0),
                n(-100.0),
                n(1.0),
                Value::Null,
                s("WS01/alice"),
                Value::Null,
                Value::Null
            ],
            vec![
                n(0.2505),
                n(502.0),
                n(-250.5),
                n(1.0),
                Value::Null,
                s("ws01/Bob"),
                Value::Null,
                Value::Null
            ],
        ]
    );
}

#[test]
fn eval_functions() {
    let table = run(
        "where User === \"émile\" | eval l = lower(User), u = upper(User), chars = len(User), \
         decoded = base64decode(CommandLine), bad = base64decode(\"%%%\"), e = entropy(\"aabb\"), \
         e0 = entropy(\"\"), c = coalesce(Missing, \"\", Computer), i = if(EventID == 4625, \"fail\", \"ok\"), \
         num = tonumber(\"12.5\"), notnum = tonumber(\"12x\"), str = tostring(EventID), \
         has = exists(Image), gone = isnull(Bytes) \
         | fields l, u, chars, decoded, bad, e, e0, c, i, num, notnum, str, has, gone",
    );
    assert_eq!(
        table.rows,
        [vec![
            s("émile"),
            s("ÉMILE"),
            n(5.0),
            s("powershell"),
            Value::Null,
            n(1.0),
            n(0.0),
            s("WS02"),
            s("fail"),
            n(12.5),
            Value::Null,
            s("4625"),
            Value::Bool(true),
            Value::Bool(true),
        ]]
    );
}

#[test]
fn base64decode_reads_powershell_utf16_and_entropy_ranks_randomness() {
    // `powershell -enc` text is UTF-16LE.
    let utf16: Vec<u8> = "whoami /all"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &utf16);
    let event = json!({"Enc": encoded, "Url": "aHR0cHM6Ly9leGFtcGxlLmNvbS8_cT0x"});
    let events = vec![(0, event.as_object().cloned().unwrap_or_default())];
    let table = run_on(
        "eval cmd = base64decode(Enc), url = base64decode(Url) | fields cmd, url",
        &events,
    );
    assert_eq!(
        table.rows,
        [vec![s("whoami /all"), s("https://example.com/?q=1")]]
    );
    let table = run_on(
        "eval low = entropy(\"aaaaaaaa\"), high = entropy(\"k8Zq1XwP\") | fields low, high",
        &events,
    );
    assert_eq!(table.rows, [vec![n(0.0), n(3.0)]]);
}

#[test]
fn eval_defines_columns_that_later_stages_read() {
    let table = run("eval host = lower(Computer) | where host == \"ws01\" | fields host, User");
    assert_eq!(
        table.rows,
        [vec![s("ws01"), s("alice")], vec![s("ws01"), s("Bob")]]
    );
    // An eval may overwrite an event field; later stages see the new value.
    let table = run("eval User = \"x\" | where User == \"x\" | stats count()");
    assert_eq!(col(&table, "count"), [n(6.0)]);
}

// ---- rows: fields, sort, head, dedup ----

#[test]
fn rows_come_in_time_order_with_time_and_the_fields_read() {
    let table = run("where EventID == 4624");
    assert_eq!(table.columns, ["_time", "EventID"]);
    assert_eq!(
        table.rows,
        [vec![n(3000.0), s("4624")], vec![n(3_600_500.0), s("4624")]]
    );
}

#[test]
fn sort_head_and_dedup() {
    let table = run("sort Bytes | fields User, Bytes");
    // Numbers in order, then text ("04688" is text), nulls last.
    assert_eq!(
        col(&table, "User"),
        [
            s("alice"),
            s("alice"),
            s("Bob"),
            s("\u{212A}im"),
            s("ÉMILE"),
            s("émile")
        ]
    );
    // Descending is the reverse, nulls still last.
    let table = run("sort -Bytes | fields User, Bytes");
    assert_eq!(
        col(&table, "User"),
        [
            s("\u{212A}im"),
            s("Bob"),
            s("alice"),
            s("alice"),
            s("ÉMILE"),
            s("émile")
        ]
    );
    let table = run("sort Computer, -_time | fields Computer, User");
    // Text sorts by bytes: "DC01" < "WS01" < "WS02" < "ws01".
    assert_eq!(
        col(&table, "User"),
        [
            s("ÉMILE"),
            s("alice"),
            s("alice"),
            s("\u{212A}im"),
            s("émile"),
            s("Bob")
        ]
    );
    let table = run("head 2 | fields User");
    assert_eq!(col(&table, "User"), [s("alice"), s("Bob")]);
    let table = run("head | fields User");
    assert_eq!(table.rows.len(), 6, "default 10");
    // dedup keeps the first row per value (values compare exactly); rows
    // without the field are dropped.
    let table = run("dedup Computer | fields Computer");
    assert_eq!(
        col(&table, "Computer"),
        [s("WS01"), s("ws01"), s("DC01"), s("WS02")]
    );
    // 3 and "3" are the same text.
    let table = run("dedup LogonType | fields User");
    assert_eq!(col(&table, "User"), [s("alice")]);
    let table = run("sort -_time | dedup Computer | head 2 | fields User");
    assert_eq!(col(&table, "User"), [s("\u{212A}im"), s("ÉMILE")]);
}

// ---- aggregations ----

#[test]
fn stats_functions_by_groups() {
    let table = run(
        "stats count(), count(Bytes) as with_bytes, dc(User) as users, sum(Bytes), avg(Bytes), min(Bytes), \
         max(Bytes), values(User), earliest(User) as first, latest(User) as last by Computer",
    );
    assert_eq!(
        table.columns,
        [
            "Computer",
            "count",
            "with_bytes",
            "users",
            "sum(Bytes)",
            "avg(Bytes)",
            "min(Bytes)",
            "max(Bytes)",
            "values(User)",
            "first",
            "last"
        ]
    );
    let list = |items: &[&str]| Value::List(items.iter().map(|i| s(i)).collect());
    assert_eq!(
        table.rows,
        [
            vec![
                s("DC01"),
                n(2.0),
                n(1.0),
                n(2.0),
                n(-50.0),
                n(-50.0),
                n(-50.0),
                n(-50.0),
                list(&["alice", "ÉMILE"]),
                s("alice"),
                s("ÉMILE")
            ],
            vec![
                s("WS01"),
                n(1.0),
                n(1.0),
                n(1.0),
                n(100.0),
                n(100.0),
                n(100.0),
                n(100.0),
                list(&["alice"]),
                s("alice"),
                s("alice")
            ],
            // "04688" is text: counted by count(Bytes), not summed.
            vec![
                s("WS02"),
                n(2.0),
                n(1.0),
                n(2.0),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                list(&["émile", "\u{212A}im"]),
                s("émile"),
                s("\u{212A}im")
            ],
            vec![
                s("ws01"),
                n(1.0),
                n(1.0),
                n(1.0),
                n(250.5),
                n(250.5),
                n(250.5),
                n(250.5),
                list(&["Bob"]),
                s("Bob"),
                s("Bob")
            ],
        ]
    );
}

#[test]
fn stats_without_by_and_over_nothing() {
    let table = run("stats count(), sum(Bytes) as total, avg(Bytes) as mean, dc(Computer)");
    assert_eq!(table.rows, [vec![n(6.0), n(300.5), n(300.5 / 3.0), n(4.0)]]);
    let table = run("where EventID == 9999 | stats count(), max(Bytes)");
    assert_eq!(table.rows, [vec![n(0.0), Value::Null]]);
    let table = run("where EventID == 9999 | stats count() by User");
    assert!(table.rows.is_empty());
    // SPL's `stats count by x` (no parentheses) works too.
    let table = run("stats count by EventID");
    assert_eq!(col(&table, "count"), [n(1.0), n(2.0), n(1.0), n(2.0)]);
    // Events without the `by` field are in no group.
    let table = run("stats count() by LogonType");
    assert_eq!(table.rows, [vec![s("3"), n(2.0)]]);
}

#[test]
fn top_and_rare() {
    let table = run("top Computer");
    assert_eq!(table.columns, ["Computer", "count", "percent"]);
    assert_eq!(
        table.rows,
        [
            vec![s("DC01"), n(2.0), n(33.33)],
            vec![s("WS02"), n(2.0), n(33.33)],
            vec![s("WS01"), n(1.0), n(16.67)],
            vec![s("ws01"), n(1.0), n(16.67)],
        ]
    );
    let table = run("top 1 Computer");
    assert_eq!(col(&table, "Computer"), [s("DC01")]);
    let table = run("rare 2 Computer");
    assert_eq!(col(&table, "Computer"), [s("WS01"), s("ws01")]);
    let table = run("top 1 User by Computer");
    assert_eq!(table.columns, ["Computer", "User", "count", "percent"]);
    assert_eq!(
        col(&table, "User"),
        [s("alice"), s("alice"), s("émile"), s("Bob")]
    );
    assert_eq!(
        col(&table, "percent"),
        [n(50.0), n(100.0), n(50.0), n(100.0)]
    );
}

#[test]
fn timechart_buckets_fill_gaps_and_split_by_field() {
    let table = run("timechart span=1h count() by Computer");
    assert_eq!(table.columns, ["_time", "DC01", "WS01", "WS02", "ws01"]);
    assert_eq!(
        table.rows,
        [
            vec![n(0.0), n(1.0), n(1.0), n(0.0), n(1.0)],
            vec![n(3_600_000.0), n(1.0), n(0.0), n(0.0), n(0.0)],
            vec![n(7_200_000.0), n(0.0), n(0.0), n(2.0), n(0.0)],
        ]
    );
    let table =
        run("where EventID != 4624 | timechart span=30m count() as events, max(Bytes) as peak");
    assert_eq!(table.columns, ["_time", "events", "peak"]);
    assert_eq!(
        table.rows,
        [
            vec![n(0.0), n(2.0), n(250.5)],
            vec![n(1_800_000.0), n(0.0), Value::Null],
            vec![n(3_600_000.0), n(0.0), Value::Null],
            vec![n(5_400_000.0), n(0.0), Value::Null],
            vec![n(7_200_000.0), n(2.0), Value::Null],
        ]
    );
    let table = run("timechart span=2h count(), dc(User) by EventID");
    assert!(
        table.columns.contains(&"count: 4688".to_owned()),
        "{:?}",
        table.columns
    );
    assert!(
        table.columns.contains(&"dc(User): 4624".to_owned()),
        "{:?}",
        table.columns
    );
}

#[test]
fn stages_after_the_aggregation_run_on_the_merged_table() {
    let table = run(
        "where EventID == 4624 or EventID == 4688 | stats dc(Computer) as hosts by User | where hosts > 1",
    );
    assert_eq!(table.rows, [vec![s("alice"), n(2.0)]]);
    let table = run(
        "stats count() by Computer | sort -count, Computer | head 2 | eval share = count / 6 | fields Computer, share",
    );
    assert_eq!(
        table.rows,
        [vec![s("DC01"), n(2.0 / 6.0)], vec![s("WS02"), n(2.0 / 6.0)]]
    );
    let table = run(
        "stats count() by Computer, User | stats count() as pairs by Computer | where pairs > 1",
    );
    assert_eq!(
        table.rows,
        [vec![s("DC01"), n(2.0)], vec![s("WS02"), n(2.0)]]
    );
    let table = run("stats count() as n by User | top 1 n");
    assert_eq!(table.rows, [vec![s("1"), n(4.0), n(80.0)]]);
}

#[test]
fn the_issue_examples_run() {
    let table = run(
        "where EventID == 4688 and CommandLine contains \"nltest\" | stats count() by Computer, User",
    );
    assert_eq!(table.columns, ["Computer", "User", "count"]);
    assert_eq!(table.rows, [vec![s("WS01"), s("alice"), n(1.0)]]);
    let table = run("where Image endswith \"\\\\rundll32.exe\" | rare ParentImage");
    assert!(table.rows.is_empty(), "no event has ParentImage");
    let table = run("where Image endswith \"\\\\rundll32.exe\" | rare Computer");
    assert_eq!(col(&table, "Computer"), [s("WS02"), s("ws01")]);
    let table = run(
        "where EventID == 4624 and LogonType == 3 | stats dc(Computer) as hosts by TargetUserName | where hosts > 20",
    );
    assert!(table.rows.is_empty());
}

// ---- the plan ----

#[test]
fn fields_read_are_exactly_the_event_fields_the_query_reads() {
    let cases: &[(&str, &[&str])] = &[
        (
            "where EventID == 4688 and CommandLine contains \"nltest\" | stats count() by Computer, User",
            &["EventID", "CommandLine", "Computer", "User"],
        ),
        (
            "where Image endswith \"x\" | rare ParentImage",
            &["Image", "ParentImage"],
        ),
        (
            "eval host = lower(Computer) | where host == \"a\" | stats count() by host",
            &["Computer"],
        ),
        // Read before redefined: an event field.
        (
            "where User == \"a\" | eval User = upper(User) | stats count() by User",
            &["User"],
        ),
        (
            "where _time > 5 | timechart span=1h sum(Bytes) by Computer",
            &["Computer", "Bytes"],
        ),
        // After the aggregation, names are columns of the table.
        (
            "stats count() by Computer | where count > 2 | sort -count",
            &["Computer"],
        ),
        // Without aggregation, later row stages read event fields.
        (
            "where A == 1 | sort B | dedup C | fields A, D",
            &["A", "B", "C", "D"],
        ),
        ("fields A, B | where C == 1", &["A", "B"]),
        (
            "stats min(_time), earliest(Image) by `Process Name`",
            &["Process Name", "Image"],
        ),
    ];
    for (query, fields) in cases {
        assert_eq!(compile(query).unwrap().fields_read(), *fields, "{query}");
    }
}

#[test]
fn the_plan_splits_per_event_aggregation_and_coordinator_stages() {
    let plan =
        compile("where A == 1 | eval b = 2 | stats count() by b | where count > 1 | sort -count")
            .unwrap();
    assert_eq!(plan.per_event.len(), 2);
    assert!(matches!(plan.aggregation, Some(crate::Stage::Stats { .. })));
    assert_eq!(plan.after.len(), 2);
    assert!(plan.shard_bound.is_empty());
    let plan =
        compile("where A == 1 | sort -B | dedup C | head 5 | where D == 1 | head 2").unwrap();
    assert!(plan.aggregation.is_none());
    assert_eq!(
        plan.shard_bound.len(),
        3,
        "sort, dedup, head: the rest only after the merge"
    );
    assert_eq!(plan.after.len(), 5);
    let plan = compile("head 5 | dedup C").unwrap();
    assert_eq!(plan.shard_bound, [crate::Stage::Head(5)]);
}

#[test]
fn the_plan_has_a_stable_json_form_that_round_trips() {
    let plan = compile("where EventID == 4688 | stats count() as n by Computer").unwrap();
    assert_eq!(
        plan.to_json(),
        r#"{"version":1,"query":"where EventID == 4688 | stats count() as n by Computer","fields":["EventID","Computer"],"per_event":[{"where":{"cmp":{"op":"eq","left":{"field":"EventID"},"right":{"lit":4688}}}}],"aggregation":{"stats":{"aggs":[{"func":"count","field":null,"name":"n"}],"by":["Computer"]}},"shard_bound":[],"after":[],"pushdown":{"clauses":[{"field":"EventID","op":"starts-with","values":["4688"]}],"any_of":[]}}"#
    );
    for query in [
        "where Image matches \"(?i)x+\" and cidr(Ip, \"10.0.0.0/8\") | eval a = if(b, 1, -2.5) | top 3 a by c",
        "where x in_cs (\"A\", 2) | timechart span=15m avg(d), values(e) by f | sort -_time | head 3",
    ] {
        let plan = compile(query).unwrap();
        let back = Plan::from_json(&plan.to_json()).unwrap();
        assert_eq!(back, plan);
        assert_eq!(back.to_json(), plan.to_json());
        assert_eq!(back.fingerprint(), plan.fingerprint());
    }
    let tampered = plan.to_json().replace("\"version\":1", "\"version\":2");
    assert!(matches!(Plan::from_json(&tampered), Err(Error::Plan(m)) if m.contains("version 2")));
    let bad = compile("where a matches \"x\"")
        .unwrap()
        .to_json()
        .replace("\"pattern\":\"x\"", "\"pattern\":\"(\"");
    assert!(
        matches!(Plan::from_json(&bad), Err(Error::Plan(m)) if m.contains("not a valid regular expression"))
    );
}

// ---- pushdown ----

fn clause(field: &str, op: MatchOp, values: &[&str]) -> Clause {
    Clause {
        field: field.to_owned(),
        op,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

#[test]
fn pushdown_returns_the_clauses_the_host_prefilter_understands() {
    let pushed = |q: &str| compile(q).unwrap().pushdown().clone();
    let p = pushed(
        "where EventID == 4688 and CommandLine contains \"nltest\" | stats count() by Computer, User",
    );
    assert_eq!(
        p.clauses,
        [
            clause("EventID", MatchOp::StartsWith, &["4688"]),
            clause("CommandLine", MatchOp::Contains, &["nltest"])
        ]
    );
    assert!(p.any_of.is_empty());
    let p = pushed("where Image endswith \"\\\\rundll32.exe\" | rare ParentImage");
    assert_eq!(
        p.clauses,
        [clause("Image", MatchOp::EndsWith, &["\\rundll32.exe"])]
    );
    let p = pushed(
        "where EventID == 4624 and LogonType == 3 | stats dc(Computer) as hosts by TargetUserName",
    );
    assert_eq!(
        p.clauses,
        [
            clause("EventID", MatchOp::StartsWith, &["4624"]),
            clause("LogonType", MatchOp::StartsWith, &["3"])
        ]
    );
    // Alternatives on one field and operator merge into one clause; on
    // different fields they form an any-of group.
    let p = pushed("where EventID == 1 or EventID == 3 or EventID in (22)");
    assert_eq!(
        p.clauses,
        [clause("EventID", MatchOp::StartsWith, &["1", "3", "22"])]
    );
    let p = pushed("where (User == \"a\" or Computer startswith \"dc\") and exists(Image)");
    assert_eq!(
        p.any_of,
        [vec![
            clause("User", MatchOp::Equals, &["a"]),
            clause("Computer", MatchOp::StartsWith, &["dc"])
        ]]
    );
    assert_eq!(p.clauses, [clause("Image", MatchOp::Exists, &[])]);
    let p = pushed(
        "where Computer in (\"ws01\", 7, \"dc01\") and Image matches \"x$\" and Ip cidr \"172.16.0.0/14\"",
    );
    assert_eq!(
        p.any_of,
        [vec![
            clause("Computer", MatchOp::Equals, &["ws01", "dc01"]),
            clause("Computer", MatchOp::StartsWith, &["7"])
        ]]
    );
    assert_eq!(
        p.clauses,
        [
            clause("Image", MatchOp::Regex, &["x$"]),
            clause(
                "Ip",
                MatchOp::StartsWith,
                &["172.16.", "172.17.", "172.18.", "172.19."]
            )
        ]
    );
    let last_octet: Vec<String> = (0..32).map(|o| format!("10.0.0.{o}")).collect();
    assert_eq!(
        pushed("where Ip cidr \"10.0.0.0/27\"").clauses[0].values,
        last_octet
    );
    // Case-sensitive needles go down whatever their letters; case-insensitive
    // ones only in ASCII; numbers only as integers.
    assert_eq!(
        pushed("where User === \"Émile\"").clauses,
        [clause("User", MatchOp::Equals, &["Émile"])]
    );
    assert!(pushed("where User == \"émile\"").is_empty());
    assert!(pushed("where User contains \"É\"").is_empty());
    assert!(pushed("where Bytes == 2.5").is_empty());
    assert_eq!(
        pushed("where Bytes == 0").clauses,
        [clause("Bytes", MatchOp::StartsWith, &["0", "-0"])]
    );
    // Not pushed: negations, ordering, computed fields, `_time`, field to
    // field, conditions after a stage that is not per-event.
    for query in [
        "where not User == \"a\"",
        "where User != \"a\"",
        "where Bytes > 5",
        "eval User = lower(Computer) | where User == \"a\"",
        "where _time == 5",
        "where User == Computer",
        "where User == \"a\" or Bytes > 5",
        "where (User == \"a\" and Computer == \"b\") or Image == \"c\"",
        "head 5 | where User == \"a\"",
        "where cidr(Ip, \"fe80::/10\")",
        "where `@values` contains \"mimikatz\"",
    ] {
        assert!(pushed(query).is_empty(), "{query}: {:?}", pushed(query));
    }
    // Earlier conditions still push when a later one does not.
    let p = pushed("where User == \"a\" | eval x = 1 | where x == 1 and Computer == \"b\"");
    assert_eq!(
        p.clauses,
        [
            clause("User", MatchOp::Equals, &["a"]),
            clause("Computer", MatchOp::Equals, &["b"])
        ]
    );
}

/// The host prefilter's semantics (worker/src/prefilter.rs), for the
/// soundness check: ASCII case-insensitive text of the JSON value, any
/// element of an array, missing or null fails.
fn host_passes(clause: &Clause, event: &Map<String, Json>) -> bool {
    fn text(v: &Json) -> Option<String> {
        match v {
            Json::Null => None,
            Json::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
    let Some(value) = event.get(&clause.field) else {
        return false;
    };
    if clause.op == MatchOp::Exists {
        return Value::from_json(value).exists();
    }
    let scalar = |v: &Json| {
        let Some(hay) = text(v) else { return false };
        let hay_l = hay.to_ascii_lowercase();
        clause.values.iter().any(|needle| {
            let n = needle.to_ascii_lowercase();
            match clause.op {
                MatchOp::Equals => hay.eq_ignore_ascii_case(needle),
                MatchOp::Contains => hay_l.contains(&n),
                MatchOp::StartsWith => hay
                    .as_bytes()
                    .get(..n.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(n.as_bytes())),
                MatchOp::EndsWith => {
                    hay.len() >= n.len()
                        && hay.as_bytes()[hay.len() - n.len()..].eq_ignore_ascii_case(n.as_bytes())
                }
                MatchOp::Regex => regex::RegexBuilder::new(needle)
                    .case_insensitive(true)
                    .build()
                    .is_ok_and(|r| r.is_match(&hay)),
                MatchOp::Exists => true,
            }
        })
    };
    match value {
        Json::Array(items) => items.iter().any(scalar),
        other => scalar(other),
    }
}

#[test]
fn pushdown_never_drops_an_event_the_query_keeps() {
    let mut events = fixture();
    // Awkward spellings of the same values.
    for (i, v) in [
        json!({"EventID": 4688.0, "User": "ALICE", "Ip": "10.0.0.31"}),
        json!({"EventID": "4688.000", "User": "AlIcE", "Ip": "10.0.0.32"}),
        json!({"EventID": [1, 4688], "User": ["x", "alice"], "Ip": "172.19.255.255"}),
        json!({"EventID": -0.0, "User": "\u{212A}", "Ip": "172.20.0.0"}),
        json!({"EventID": "0", "User": "k", "Ip": " 10.0.0.1"}),
        json!({"EventID": "4688 ", "User": "İ", "Image": "C:\\X\\RunDll32.EXE"}),
    ]
    .into_iter()
    .enumerate()
    {
        events.push((
            10_000 + i as i64,
            v.as_object().cloned().unwrap_or_default(),
        ));
    }
    for query in [
        "where EventID == 4688",
        "where EventID == \"4688\" or EventID == 0",
        "where EventID in (4688, 4624, 0)",
        "where User == \"alice\"",
        "where User === \"alice\"",
        "where User contains \"k\" or User startswith \"i\"",
        "where User in_cs (\"alice\", \"k\")",
        "where Ip cidr \"10.0.0.0/27\"",
        "where cidr(Ip, \"172.16.0.0/14\") or cidr(SourceIp, \"10.0.0.0/8\")",
        "where Image endswith \"\\\\rundll32.exe\"",
        "where Image matches_cs \"RunDll\"",
        "where exists(Tags) and Tags == \"ad\"",
    ] {
        let plan = compile(query).unwrap();
        let pushdown = plan.pushdown();
        assert!(!pushdown.is_empty(), "{query} pushes something");
        let kept = run_on(&format!("{query} | eval _t = _time | fields _t"), &events);
        for row in &kept.rows {
            let t = row[0].as_number().unwrap() as i64;
            let (_, event) = events.iter().find(|(time, _)| *time == t).unwrap();
            let passes = pushdown.clauses.iter().all(|c| host_passes(c, event))
                && pushdown
                    .any_of
                    .iter()
                    .all(|g| g.iter().any(|c| host_passes(c, event)));
            assert!(
                passes,
                "{query}: the prefilter {pushdown:?} drops {event:?}"
            );
        }
    }
}

// ---- one partition versus many ----

/// Deterministic pseudo-random events.
fn synthetic(count: usize) -> Vec<(i64, Map<String, Json>)> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    (0..count)
        .map(|i| {
            let t = (i as i64) * 7_919 % 86_400_000 + (next(1000) as i64);
            let bytes: Json = match next(4) {
                0 => json!(next(10_000) as f64 / 8.0),
                1 => json!(next(500).to_string()),
                2 => Json::Null,
                _ => json!(next(100_000)),
            };
            let event_id = [4624, 4625, 4688, 1][next(4) as usize];
            let image = [
                "cmd.exe",
                "powershell.exe",
                "rundll32.exe",
                "nltest.exe",
                "CMD.EXE",
            ][next(5) as usize];
            let mut event = json!({
                "EventID": event_id,
                "Computer": format!("host-{}", next(40)),
                "User": format!("user-{}", next(3_000)),
                "Image": image,
                "Bytes": bytes,
            });
            if next(5) == 0 {
                event.as_object_mut().map(|m| m.remove("Computer"));
            }
            (t, event.as_object().cloned().unwrap_or_default())
        })
        .collect()
}

/// Shard `p` of `events` split round-robin into `parts`.
fn shard_of(events: &[(i64, Map<String, Json>)], parts: usize, p: usize) -> Vec<JsonEvent<'_>> {
    events
        .iter()
        .enumerate()
        .filter(|(i, _)| i % parts == p)
        .map(|(_, (t, map))| JsonEvent {
            map,
            time_ms: Some(*t),
        })
        .collect()
}

/// The query over `events` split into `parts` shards (round-robin), each
/// partial sent through its JSON form, merged in the given order.
fn partitioned(
    plan: &Plan,
    events: &[(i64, Map<String, Json>)],
    parts: usize,
    reverse: bool,
) -> Table {
    let mut partials: Vec<Partial> = (0..parts)
        .map(|p| {
            let partial = plan.run_shard(shard_of(events, parts, p).iter());
            let wire = serde_json::to_string(&partial).unwrap();
            serde_json::from_str(&wire).unwrap()
        })
        .collect();
    if reverse {
        partials.reverse();
    }
    let mut merged = plan.empty_partial();
    for partial in partials {
        plan.merge(&mut merged, partial).unwrap();
    }
    plan.finish(merged).unwrap()
}

/// Queries over [`synthetic`] events that cover every stage and aggregate.
const SPLIT_QUERIES: &[&str] = &[
    "where EventID == 4688 and Image contains \"nltest\" | stats count() by Computer",
    "stats count(), count(Computer), dc(Computer), sum(Bytes), avg(Bytes), min(Bytes), max(Bytes) by EventID",
    "stats values(Image), earliest(User), latest(User), earliest(_time), latest(Bytes) by Image",
    "where Image endswith \"exe\" | top 3 Computer",
    "rare 5 Image by EventID",
    "timechart span=4h count(), avg(Bytes) by EventID",
    "eval kb = Bytes / 1024 | where kb > 1 | stats sum(kb) as total by Computer | sort -total | head 5",
    "where EventID == 4625 | sort -Bytes, User | head 25 | fields User, Bytes",
    "where Image == \"cmd.exe\" | dedup Computer | fields Computer, User",
    "sort User | dedup Computer | head 7 | fields Computer, User",
    "where Bytes > 12000 | fields _time, User, Bytes | head 40",
    "head 100 | dedup Computer | fields Computer",
    "stats dc(User) as users by Computer | where users > 100 | sort -users",
];

#[test]
fn one_partition_and_many_merged_give_identical_results() {
    let events = synthetic(6_000);
    for query in SPLIT_QUERIES {
        let plan = compile(query).unwrap();
        let whole = partitioned(&plan, &events, 1, false);
        assert!(!whole.rows.is_empty(), "{query} returns rows");
        for parts in [2, 3, 7, 16] {
            for reverse in [false, true] {
                assert_eq!(
                    partitioned(&plan, &events, parts, reverse),
                    whole,
                    "{query} over {parts} shards"
                );
            }
        }
    }
}

#[test]
fn distinct_counts_beyond_the_exact_limit_are_within_the_sketch_error_and_merge_alike() {
    let events = synthetic(20_000);
    let truth: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|(_, e)| e["User"].as_str())
        .collect();
    assert!(
        truth.len() > 1_000,
        "beyond the exact limit: {}",
        truth.len()
    );
    let plan = compile("stats dc(User) as users").unwrap();
    let whole = partitioned(&plan, &events, 1, false);
    let estimate = whole.rows[0][0].as_number().unwrap();
    let error = (estimate - truth.len() as f64).abs() / truth.len() as f64;
    // About 1.6% standard error: 5% is three standard errors.
    assert!(
        error < 0.05,
        "estimate {estimate} for {} distinct users",
        truth.len()
    );
    for parts in [2, 5, 11] {
        let merged = partitioned(&plan, &events, parts, true);
        let other = merged.rows[0][0].as_number().unwrap();
        assert!(
            (other - truth.len() as f64).abs() / (truth.len() as f64) < 0.05,
            "{parts} shards: {other}"
        );
    }
}

#[test]
fn projected_text_events_give_the_same_results_as_json_events() {
    // What the host hands a module: each field's text (numbers and
    // booleans as JSON text, arrays as compact JSON).
    let events = fixture();
    for query in [
        "where EventID == 4688 or Tags == \"ad\" | stats count(), sum(Bytes) by Computer",
        "where User contains \"mil\" | fields User, `id.orig_h`, Bytes",
        "where Bytes >= 100 or isnull(Bytes) | top User",
    ] {
        let plan = compile(query).unwrap();
        let projected: Vec<(i64, Vec<Option<String>>)> = events
            .iter()
            .map(|(t, map)| {
                let values = plan
                    .fields_read()
                    .iter()
                    .map(|f| {
                        let mut v = map.get(f);
                        if v.is_none() && f.contains('.') {
                            let (a, b) = f.split_once('.').unwrap();
                            v = map.get(a).and_then(|o| o.get(b));
                        }
                        v.and_then(|v| match v {
                            Json::Null => None,
                            Json::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        })
                    })
                    .collect();
                (*t, values)
            })
            .collect();
        let text_events: Vec<TextEvent<'_>> = projected
            .iter()
            .map(|(t, values)| TextEvent {
                time_ms: Some(*t),
                values,
            })
            .collect();
        assert_eq!(plan.run(text_events.iter()).unwrap(), run(query), "{query}");
    }
}

/// The query over `events` split into `parts` shards, each shard's partial
/// sent as the contract's aggregates and merged by the contract's rules
/// (as the coordinator merges a hunt's task results), then read back.
fn through_contract_merge(plan: &Plan, events: &[(i64, Map<String, Json>)], parts: usize) -> Table {
    let mut coordinator = quarry_contract::aggregate::Merged::new();
    for p in 0..parts {
        let shard = shard_of(events, parts, p);
        for aggregate in plan.partial_to_aggregates(&plan.run_shard(shard.iter())) {
            assert!(aggregate.name.starts_with("query:"), "{}", aggregate.name);
            quarry_contract::aggregate::merge_into(&mut coordinator, aggregate).unwrap();
        }
    }
    let partial = plan.partial_from_merged(&coordinator).unwrap();
    plan.finish(partial).unwrap()
}

#[test]
fn partials_merged_as_contract_aggregates_give_the_same_results() {
    let events = synthetic(6_000);
    for query in SPLIT_QUERIES {
        let plan = compile(query).unwrap();
        let whole = partitioned(&plan, &events, 1, false);
        for parts in [1, 3, 16] {
            assert_eq!(
                through_contract_merge(&plan, &events, parts),
                whole,
                "{query} over {parts} shards through the contract merge"
            );
        }
    }
}

#[test]
fn sums_travel_exactly_whatever_their_sign_and_size() {
    // Integers of any size and decimals to 15 digits are numbers.
    let values = [
        "1000000000000000",
        "-3.25",
        "0.5",
        "-1000000000000000",
        "7",
        "2000000000000000000",
        "-2000000000000000000",
        "0.333333333333333",
        "-9000000000000000000",
        "9000000000000000000",
    ];
    let events: Vec<(i64, Map<String, Json>)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let event = json!({"G": if i % 2 == 0 { "a" } else { "b" }, "X": v});
            (i as i64, event.as_object().cloned().unwrap_or_default())
        })
        .collect();
    let plan = compile("stats sum(X), avg(X), count(X) by G").unwrap();
    let whole = partitioned(&plan, &events, 1, false);
    let sums = col(&whole, "sum(X)");
    // Beyond 2^53 a double keeps 15 or 16 digits; the exact sums, rounded once.
    assert_eq!(
        sums,
        [
            n(-10_998_999_999_999_999_992.5),
            n(10_998_999_999_999_999_997.083_333_333_333_333)
        ]
    );
    for parts in [2, 3, 5, 10] {
        assert_eq!(
            through_contract_merge(&plan, &events, parts),
            whole,
            "{parts}"
        );
    }
    // Nothing summed: no groups, and `stats sum(X)` alone is one null row.
    let empty = compile("stats sum(X)").unwrap();
    let table = through_contract_merge(&empty, &[], 1);
    assert_eq!(table, partitioned(&empty, &[], 1, false));
}

#[test]
fn merged_aggregates_of_another_query_or_kind_are_refused() {
    let a = compile("stats count() by User").unwrap();
    let b = compile("stats count() by Computer").unwrap();
    let mut merged = quarry_contract::aggregate::Merged::new();
    for aggregate in b.partial_to_aggregates(&b.empty_partial()) {
        quarry_contract::aggregate::merge_into(&mut merged, aggregate).unwrap();
    }
    let err = a.partial_from_merged(&merged).unwrap_err();
    assert!(err.to_string().contains("another query"), "{err}");
    // No aggregates at all: the merge of no shards.
    let none = quarry_contract::aggregate::Merged::new();
    assert_eq!(a.partial_from_merged(&none).unwrap(), a.empty_partial());
    // A count carried as another kind.
    let mut wrong = quarry_contract::aggregate::Merged::new();
    for aggregate in a.partial_to_aggregates(&a.empty_partial()) {
        quarry_contract::aggregate::merge_into(&mut wrong, aggregate).unwrap();
    }
    wrong.insert(
        "query:0:count".to_owned(),
        quarry_contract::AggregateValue::Distinct(Default::default()),
    );
    let err = a.partial_from_merged(&wrong).unwrap_err();
    assert!(err.to_string().contains("query:0:count"), "{err}");
}

#[test]
fn partials_of_another_plan_are_refused() {
    let a = compile("stats count() by User").unwrap();
    let b = compile("stats count() by Computer").unwrap();
    let mut merged = a.empty_partial();
    let err = a.merge(&mut merged, b.empty_partial()).unwrap_err();
    assert!(matches!(err, Error::Merge(_)), "{err}");
    assert!(a.finish(b.empty_partial()).is_err());
}

#[test]
fn a_shard_keeps_only_the_rows_its_bound_allows() {
    let events = synthetic(5_000);
    let plan = compile("sort -Bytes | head 3 | fields User, Bytes").unwrap();
    let views: Vec<JsonEvent<'_>> = events
        .iter()
        .map(|(t, map)| JsonEvent {
            map,
            time_ms: Some(*t),
        })
        .collect();
    let partial = plan.run_shard(views.iter());
    let crate::PartialData::Rows { rows, truncated } = &partial.data else {
        panic!("rows")
    };
    assert_eq!(rows.len(), 3);
    assert!(!truncated);
    let plan = compile("fields User").unwrap();
    let partial = plan.run_shard(views.iter());
    let crate::PartialData::Rows { rows, .. } = &partial.data else {
        panic!("rows")
    };
    assert_eq!(rows.len(), 5_000, "no bound: every row");
}

#[test]
fn every_query_in_the_language_reference_compiles() {
    let doc = include_str!("../../docs/queries.md");
    let mut in_block = false;
    let mut queries = 0;
    for line in doc.lines() {
        match line.trim() {
            "```query" => in_block = true,
            "```" => in_block = false,
            query if in_block && !query.is_empty() => {
                let plan = compile(query).unwrap_or_else(|e| panic!("docs/queries.md: {e}"));
                assert!(Plan::from_json(&plan.to_json()).is_ok(), "{query}");
                queries += 1;
            }
            _ => {}
        }
    }
    assert!(queries >= 13, "found {queries} queries");
}

#[test]
fn mangled_queries_fail_cleanly_and_whatever_compiles_runs() {
    let seeds = [
        "where EventID == 4688 and CommandLine contains \"nltest\" | stats count() by Computer, User",
        "where `Process Name` matches_cs \"x+\" or cidr(Ip, \"10.0.0.0/8\") | eval a = if(b > 1, lower(c) || \"é\", -2.5 % 0) | top 3 a by c",
        "timechart span=15m avg(Bytes), values(User) by Computer | sort -_time | dedup DC01 | head 3",
        "where Tags in_cs ('a', -1) | fields \"x y\", z | rare 2 z | where count !== 'ü'",
    ];
    let events = fixture();
    let mut compiled = 0;
    for seed in seeds {
        let chars: Vec<(usize, char)> = seed.char_indices().collect();
        let mut variants: Vec<String> = Vec::new();
        for &(i, c) in &chars {
            variants.push(seed[..i].to_owned());
            variants.push(format!("{}{}", &seed[..i], &seed[i + c.len_utf8()..]));
            variants.push(format!("{}|{}", &seed[..i], &seed[i..]));
            variants.push(format!("{}\"{}", &seed[..i], &seed[i..]));
        }
        for query in variants {
            match compile(&query) {
                Ok(plan) => {
                    compiled += 1;
                    let views: Vec<JsonEvent<'_>> = events
                        .iter()
                        .map(|(t, map)| JsonEvent {
                            map,
                            time_ms: Some(*t),
                        })
                        .collect();
                    plan.run(views.iter())
                        .unwrap_or_else(|e| panic!("{query}: {e}"));
                }
                Err(err) => {
                    let text = err.to_string();
                    assert!(
                        text.contains('^') && err.position().is_some(),
                        "{query}: {text}"
                    );
                }
            }
        }
    }
    assert!(compiled > 50, "some variants still compile: {compiled}");
}

#[test]
fn unknown_fields_come_with_the_closest_known_names() {
    let plan = compile("where EventId == 4688 and commandline contains \"x\" | stats count() by Computer, Event.EventData.User, Nothing_like_it").unwrap();
    let known = [
        "EventID",
        "CommandLine",
        "Computer",
        "User",
        "EventType",
        "Image",
    ];
    let unknown = plan.unknown_fields(known);
    let pairs: Vec<(&str, Vec<&str>)> = unknown
        .iter()
        .map(|u| {
            (
                u.field.as_str(),
                u.closest.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("EventId", vec!["EventID"]),
            ("commandline", vec!["CommandLine"]),
            ("Nothing_like_it", vec![])
        ]
    );
    assert!(
        compile("where `@values` contains \"x\"")
            .unwrap()
            .unknown_fields(known)
            .is_empty()
    );
}

#[test]
fn a_shard_with_more_rows_than_the_cap_keeps_the_earliest_without_sorting_per_event() {
    // Regression: past the cap, every further event re-sorted the rows.
    let values: Vec<Vec<Option<String>>> = (0..crate::MAX_ROWS + 20_000)
        .map(|i| vec![Some(format!("u{}", i % 7))])
        .collect();
    let events: Vec<TextEvent<'_>> = values
        .iter()
        .enumerate()
        .rev()
        .map(|(i, v)| TextEvent {
            time_ms: Some(i as i64),
            values: v,
        })
        .collect();
    let plan = compile("fields _time, User").unwrap();
    let started = std::time::Instant::now();
    let partial = plan.run_shard(events.iter());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let crate::PartialData::Rows { rows, truncated } = &partial.data else {
        panic!("rows")
    };
    assert!(*truncated);
    assert_eq!(rows.len(), crate::MAX_ROWS);
    assert_eq!(rows.first().and_then(|r| r.time), Some(0));
    assert_eq!(
        rows.last().and_then(|r| r.time),
        Some(crate::MAX_ROWS as i64 - 1)
    );
    let table = plan.finish(partial).unwrap();
    assert!(table.truncated);
}
