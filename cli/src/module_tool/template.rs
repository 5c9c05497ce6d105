//! The files `quarry module new` writes. `{{name}}` is the module name,
//! `{{crate}}` its Rust identifier, `{{sdk}}` the path to quarry-sdk.

/// `Cargo.toml`.
pub const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# `cdylib` is the wasm component; `rlib` lets `cargo test` link the module's
# logic into native test binaries.
crate-type = ["cdylib", "rlib"]

[dependencies]
quarry-sdk = { path = "{{sdk}}" }

# A workspace of its own, so the crate builds the same inside a Quarry
# checkout (which has its own workspace) and outside it.
[workspace]
"#;

/// `.cargo/config.toml`.
pub const CARGO_CONFIG: &str = r#"# Shortcuts for this module (see README.md):
#   cargo wasm   builds target/wasm32-wasip2/release/{{crate}}.wasm
# `cargo test` stays native: the hunt logic is tested on the build machine.
[alias]
wasm = "build --release --target wasm32-wasip2"
"#;

/// `.gitignore`.
pub const GITIGNORE: &str = "/target\n";

/// `README.md`.
pub const README: &str = r#"# {{name}}

A Quarry hunt module. It reports logons (Windows event 4624) of a watched
account and counts logons per account.

Parameters:

- `account`: the account to watch (case-insensitive; default `administrator`).

## Develop

```sh
cargo test                                   # native unit tests of the logic
quarry module build                          # wasm32-wasip2 component, validated, with its sha256
quarry module test target/wasm32-wasip2/release/{{crate}}.wasm \
    --logs security.jsonl --params account=alice
```

`quarry module build` runs `cargo build --release --target wasm32-wasip2`
(the same as `cargo wasm`); if the target is missing, install it with
`rustup target add wasm32-wasip2`.

## Ship

```sh
quarry module upload target/wasm32-wasip2/release/{{crate}}.wasm
quarry hunt submit {{name}} --selector env=prod --param account=alice --wait
```
"#;

/// `src/lib.rs`.
pub const LIB_RS: &str = r#"//! Hunt module `{{name}}`: reports logons of a watched account and counts
//! logons per account.
//!
//! Reads Windows Security events 4624 ("An account was successfully logged
//! on"). Finding `{{name}}/watched-account-logon` for each logon of the
//! account given by the `account` parameter; aggregate `logons_by_account`.

use quarry_sdk::{
    Counts, Descriptor, Emitter, Event, Finding, Hunt, Output, Params, Predicate, Severity,
};

quarry_sdk::fields! {
    /// The fields this module reads, in the order the host projects them.
    pub mod field {
        /// `4624` for a successful logon.
        EVENT_ID = "EventID",
        /// The account that logged on.
        TARGET_USER_NAME = "TargetUserName",
        /// The account's domain.
        TARGET_DOMAIN_NAME = "TargetDomainName",
        /// Where the logon came from.
        IP_ADDRESS = "IpAddress",
        /// The machine that logged the event (evtx naming).
        COMPUTER = "Computer",
        /// The machine that logged the event (some shippers' naming).
        HOSTNAME = "Hostname",
    }
}

/// Parameter: the account to watch.
pub const PARAM_ACCOUNT: &str = "account";
/// ATT&CK: Valid Accounts.
const TECHNIQUES: [&str; 1] = ["T1078"];

/// The hunt's per-task state.
pub struct WatchedAccount {
    account: String,
    logons: Counts,
}

impl Hunt for WatchedAccount {
    fn describe() -> Descriptor {
        Descriptor::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .with_description("Logons (4624) of a watched account; logons counted per account.")
            .with_fields(field::NAMES)
            // Evaluated by the host: the module only sees successful logons.
            .with_predicate(Predicate::equals("EventID", &["4624"]))
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        params.ensure_known(&[PARAM_ACCOUNT])?;
        let account = params.str_or(PARAM_ACCOUNT, "administrator").trim();
        if account.is_empty() {
            return Err(format!("parameter `{PARAM_ACCOUNT}` must name an account"));
        }
        Ok(WatchedAccount {
            account: account.to_owned(),
            logons: Counts::new("logons_by_account"),
        })
    }

    fn scan(&mut self, batch: &[Event], out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            let Some(user) = event.get_nonempty(field::TARGET_USER_NAME) else {
                continue;
            };
            self.logons.increment(user);
            if !user.eq_ignore_ascii_case(&self.account) {
                continue;
            }
            let host = event
                .first_of(&[field::COMPUTER, field::HOSTNAME])
                .unwrap_or("unknown");
            let domain = event.get(field::TARGET_DOMAIN_NAME).unwrap_or("");
            out.emit(
                Finding::builder(
                    "{{name}}/watched-account-logon",
                    format!("Watched account {user} logged on to {host}"),
                )
                .severity(Severity::Medium)
                .confidence(50)
                .entity(format!("user:{domain}\\{user}"))
                .timestamp_ms(event.timestamp_ms)
                .evidence("host", host)
                .evidence("source_ip", event.get(field::IP_ADDRESS).unwrap_or("-"))
                .techniques(TECHNIQUES)
                .offset(event.offset),
            );
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        quarry_sdk::log::debug(&format!("logons of {} accounts", self.logons.len()));
        out.aggregate(self.logons);
    }
}

quarry_sdk::export_hunt!(WatchedAccount);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::Task;

    /// A 4624 in declared field order.
    fn logon(offset: u64, user: &str) -> Event {
        let value = |v: &str| Some(v.to_owned());
        Event::new(
            1_700_000_000_000 + offset as i64,
            offset,
            vec![
                value("4624"),
                value(user),
                value("CORP"),
                value("10.0.0.7"),
                value("dc01.corp.example"),
                None,
            ],
        )
    }

    #[test]
    fn reports_the_watched_account_and_counts_all() {
        let mut task = Task::<WatchedAccount>::new();
        task.init(vec![("account".into(), "Alice".into())]).unwrap();
        let findings = task
            .scan(vec![logon(1, "bob"), logon(2, "alice"), logon(3, "bob")])
            .unwrap();
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].entity, "user:CORP\\alice");
        assert_eq!(findings[0].offsets, [2]);
        let output = task.finish().unwrap();
        assert_eq!(
            output.aggregates[0].counts(),
            [("alice".to_owned(), 1), ("bob".to_owned(), 2)]
        );
    }

    #[test]
    fn parameter_mistakes_are_explained() {
        let mut task = Task::<WatchedAccount>::new();
        let err = task.init(vec![("acount".into(), "x".into())]).unwrap_err();
        assert!(err.contains("unknown parameter `acount`"), "{err}");
    }
}
"#;

/// Fills in the placeholders.
pub fn render(template: &str, name: &str, crate_name: &str, sdk: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", crate_name)
        .replace("{{sdk}}", sdk)
}
