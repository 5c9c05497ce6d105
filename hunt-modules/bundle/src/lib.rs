//! The hunt modules shipped with Quarry, as WebAssembly components.
//!
//! `build.rs` compiles each module crate of `hunt-modules/` for
//! `wasm32-wasip2` (a component implementing the WIT world
//! `quarry:hunt/planned-hunt@0.2.4` from `sdk/wit`) and this crate embeds the bytes,
//! so a worker or the CLI can register the modules without a separate build
//! step.

#![warn(missing_docs)]

use std::fmt;

/// A hunt module compiled into this crate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShippedModule {
    /// The module's name, as its descriptor reports it (`bruteforce`).
    pub name: &'static str,
    /// The module's version (its crate version), as its descriptor reports it.
    pub version: &'static str,
    /// The component binary.
    pub wasm: &'static [u8],
}

impl fmt::Debug for ShippedModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes are hundreds of kilobytes; their size is what helps.
        f.debug_struct("ShippedModule")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("wasm_len", &self.wasm.len())
            .finish()
    }
}

/// `beaconing`: periodic outbound connections (low jitter in inter-arrival
/// times) per source/destination pair.
pub const BEACONING: ShippedModule = ShippedModule {
    name: "beaconing",
    version: env!("QUARRY_MODULE_VERSION_BEACONING"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/beaconing.wasm")),
};

/// `bruteforce`: many failed Windows logons (4625) for an account or from a
/// source, then a success (4624).
pub const BRUTEFORCE: ShippedModule = ShippedModule {
    name: "bruteforce",
    version: env!("QUARRY_MODULE_VERSION_BRUTEFORCE"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/bruteforce.wasm")),
};

/// `dns-tunnel`: long, high-entropy subdomain labels and unusual query
/// volume per registered domain.
pub const DNS_TUNNEL: ShippedModule = ShippedModule {
    name: "dns-tunnel",
    version: env!("QUARRY_MODULE_VERSION_DNS_TUNNEL"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/dns_tunnel.wasm")),
};

/// `encoded-powershell`: PowerShell started with an encoded or obfuscated
/// command line, decoded in the evidence.
pub const ENCODED_POWERSHELL: ShippedModule = ShippedModule {
    name: "encoded-powershell",
    version: env!("QUARRY_MODULE_VERSION_ENCODED_POWERSHELL"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/encoded_powershell.wasm")),
};

/// `ioc-sweep`: hashes, IP addresses, domains and URLs of events matched
/// against the intel sets shipped with the hunt.
pub const IOC_SWEEP: ShippedModule = ShippedModule {
    name: "ioc-sweep",
    version: env!("QUARRY_MODULE_VERSION_IOC_SWEEP"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/ioc_sweep.wasm")),
};

/// `lateral-movement`: remote service creation, admin-share access and new
/// remote logons, correlated per source and destination.
pub const LATERAL_MOVEMENT: ShippedModule = ShippedModule {
    name: "lateral-movement",
    version: env!("QUARRY_MODULE_VERSION_LATERAL_MOVEMENT"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/lateral_movement.wasm")),
};

/// `pivot`: every event that mentions one entity (`entity=host:NAME`,
/// `user:NAME`, `ip:ADDRESS`, …), one informational finding per event.
pub const PIVOT: ShippedModule = ShippedModule {
    name: "pivot",
    version: env!("QUARRY_MODULE_VERSION_PIVOT"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/pivot.wasm")),
};

/// `query`: runs a `quarry query` pipeline beside each shard and returns
/// its mergeable partial result (see `docs/queries.md`).
pub const QUERY: ShippedModule = ShippedModule {
    name: "query",
    version: env!("QUARRY_MODULE_VERSION_QUERY"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/query.wasm")),
};

/// `rare-process`: process images stacked by host across the hunt; the
/// binaries seen on at most `max_hosts` hosts.
pub const RARE_PROCESS: ShippedModule = ShippedModule {
    name: "rare-process",
    version: env!("QUARRY_MODULE_VERSION_RARE_PROCESS"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/rare_process.wasm")),
};

/// `sigma`: evaluates Sigma detection rules, passed as `rule.<name>`
/// parameters, against events (see `docs/sigma.md`).
pub const SIGMA: ShippedModule = ShippedModule {
    name: "sigma",
    version: env!("QUARRY_MODULE_VERSION_SIGMA"),
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/sigma.wasm")),
};

static ALL: [ShippedModule; 10] = [
    BEACONING,
    BRUTEFORCE,
    DNS_TUNNEL,
    ENCODED_POWERSHELL,
    IOC_SWEEP,
    LATERAL_MOVEMENT,
    PIVOT,
    QUERY,
    RARE_PROCESS,
    SIGMA,
];

/// Every shipped module, in name order.
pub fn all() -> &'static [ShippedModule] {
    &ALL
}

/// The shipped module called `name`, if any.
pub fn find(name: &str) -> Option<&'static ShippedModule> {
    all().iter().find(|module| module.name == name)
}

/// Misbehaving (and no-op) modules for the worker's sandbox tests and the
/// benchmark. Built with the shipped ones but deliberately not in [`all()`],
/// so nothing registers them as shipped modules.
pub mod test_modules {
    use super::ShippedModule;

    macro_rules! test_module {
        ($(#[$doc:meta])* $const:ident, $name:literal, $file:literal) => {
            $(#[$doc])*
            pub const $const: ShippedModule = ShippedModule {
                name: $name,
                version: "0.1.0",
                wasm: include_bytes!(concat!(env!("OUT_DIR"), "/", $file)),
            };
        };
    }

    test_module!(
        /// Reads `EventID`, emits nothing.
        NOOP, "noop", "test_noop.wasm"
    );
    test_module!(
        /// Loops forever in `scan`.
        RUNAWAY_LOOP, "runaway-loop", "test_runaway_loop.wasm"
    );
    test_module!(
        /// Allocates without bound in `scan`.
        MEMORY_HOG, "memory-hog", "test_memory_hog.wasm"
    );
    test_module!(
        /// Panics in `scan` with [`TRAP_PANIC_MESSAGE`].
        TRAP_PANIC, "trap-panic", "test_trap_panic.wasm"
    );
    test_module!(
        /// Returns `findings` findings (default 10000) with `evidence_bytes`
        /// bytes of evidence each (default 16) from its first `scan`, or
        /// from `finish` with `at=finish`.
        OUTPUT_FLOOD, "output-flood", "test_output_flood.wasm"
    );
    test_module!(
        /// Prints to stdout forever in `scan`.
        STDOUT_FLOOD, "stdout-flood", "test_stdout_flood.wasm"
    );
    test_module!(
        /// Prefilter `Image` ends with `\rundll32.exe` and `CommandLine`
        /// contains `comsvcs` (~1% of the benchmark shard); reports how many
        /// events reached it as the aggregate `rare-match` (key `matched`).
        RARE_MATCH, "rare-match", "test_rare_match.wasm"
    );
    test_module!(
        /// Returns every aggregate kind keyed by the field `value` (stack
        /// threshold: parameter `max_hosts`), flags values in the intel set
        /// `watch`, lets through only events with a `value` or
        /// `marker = keep` (an any-of group); `malformed=true` adds an
        /// aggregate with a malformed sketch.
        AGGREGATES, "aggregates", "test_aggregates.wasm"
    );

    test_module!(
        /// Sleeps forever in `scan` (`std::thread::sleep(Duration::MAX)`).
        SLEEPER, "sleeper", "test_sleeper.wasm"
    );
    test_module!(
        /// Polls forever in `scan`: a clock pollable that is never ready
        /// (`on=clock`, default) or stdin's pollable in a loop (`on=stdin`).
        POLL_FOREVER, "poll-forever", "test_poll_forever.wasm"
    );
    test_module!(
        /// Asks host functions for huge amounts in `scan` (in `finish` with
        /// `at=finish`): `call=random` or `call=insecure-random` (`len`
        /// bytes, default 2^40), or `call=log` (`times` lines of
        /// `message_bytes` bytes with `fields` empty fields); then returns
        /// `findings` findings (default 0) of `evidence_bytes` bytes of
        /// evidence each.
        HOST_ABUSE, "host-abuse", "test_host_abuse.wasm"
    );
    test_module!(
        /// Declares 5000 fields (each twice), 5000 prefilter clauses and 1000
        /// any-of groups.
        WIDE_DESCRIPTOR, "wide-descriptor", "test_wide_descriptor.wasm"
    );
    test_module!(
        /// Returns `findings` findings (default 4) of `items` (default 500000)
        /// empty evidence items each, with empty strings throughout.
        EMPTY_FLOOD, "empty-flood", "test_empty_flood.wasm"
    );
    test_module!(
        /// Plans each task from its parameters (contract 0.2.2): declares
        /// the `fields` (comma-separated) or `plan_fields` (a count) given,
        /// fails its plan with `plan_error`, renames itself with
        /// `plan_name`, keeps `describe()`'s with `plan_none=true`; counts
        /// the events carrying each field.
        PLANNER, "planner", "test_planner.wasm"
    );

    test_module!(
        /// Turns a loop `spins` times in `finish` (a task that takes a
        /// while, then succeeds) and reports one finding, `spinner/done`,
        /// whose entity is the first event's `host`.
        SPINNER, "spinner", "test_spinner.wasm"
    );

    /// The message `trap-panic` panics with.
    pub const TRAP_PANIC_MESSAGE: &str =
        "trap-panic: deliberate panic in scan (quarry sandbox test)";

    /// Every test module.
    pub const ALL: [ShippedModule; 15] = [
        NOOP,
        RUNAWAY_LOOP,
        MEMORY_HOG,
        TRAP_PANIC,
        OUTPUT_FLOOD,
        STDOUT_FLOOD,
        RARE_MATCH,
        AGGREGATES,
        SLEEPER,
        POLL_FOREVER,
        HOST_ABUSE,
        WIDE_DESCRIPTOR,
        EMPTY_FLOOD,
        PLANNER,
        SPINNER,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmparser::{Parser, Payload, Validator, WasmFeatures};

    /// The names a component imports and exports at its top level.
    fn interface(wasm: &[u8]) -> (Vec<String>, Vec<String>) {
        let (mut imports, mut exports) = (Vec::new(), Vec::new());
        // Nested core modules and components bring their own sections;
        // only depth 1 is the outer component.
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.expect("the component parses") {
                Payload::Version { .. } => depth += 1,
                Payload::End(_) => depth -= 1,
                Payload::ComponentImportSection(reader) if depth == 1 => {
                    for import in reader {
                        imports.push(import.expect("import").name.name.to_owned());
                    }
                }
                Payload::ComponentExportSection(reader) if depth == 1 => {
                    for export in reader {
                        exports.push(export.expect("export").name.name.to_owned());
                    }
                }
                _ => {}
            }
        }
        (imports, exports)
    }

    #[test]
    fn embedded_modules_are_components() {
        for module in all().iter().chain(&test_modules::ALL) {
            assert_eq!(&module.wasm[..4], b"\0asm", "{} is not wasm", module.name);
            // Version 0x0d with layer 1 is the component encoding; a core
            // module would have 0x01 0x00 0x00 0x00.
            assert_eq!(
                &module.wasm[4..8],
                &[0x0d, 0x00, 0x01, 0x00],
                "{} is not a component",
                module.name
            );
            Validator::new_with_features(WasmFeatures::all())
                .validate_all(module.wasm)
                .unwrap_or_else(|e| panic!("{} does not validate: {e}", module.name));
        }
    }

    #[test]
    fn components_implement_the_hunt_world() {
        for module in all().iter().chain(&test_modules::ALL) {
            let (imports, mut exports) = interface(module.wasm);
            exports.sort();
            assert_eq!(
                exports,
                [
                    "quarry:hunt/columnar@0.2.4",
                    "quarry:hunt/module@0.2.4",
                    "quarry:hunt/planner@0.2.4",
                    "quarry:hunt/reuse@0.2.4"
                ],
                "{}",
                module.name
            );
            // The host interface plus the WASI interfaces Rust's std pulls in,
            // which the worker links with a deny-all context.
            for import in &imports {
                assert!(
                    import.starts_with("quarry:hunt/") || import.starts_with("wasi:"),
                    "{} imports unexpected {import}",
                    module.name
                );
            }
            // Test modules that never log need not import it.
            let is_test_module = test_modules::ALL.contains(module);
            assert!(
                is_test_module || imports.iter().any(|i| i == "quarry:hunt/host@0.2.4"),
                "{} does not import the host interface: {imports:?}",
                module.name
            );
        }
    }

    #[test]
    fn metadata_matches_the_module_crates() {
        assert_eq!(BEACONING.name, beaconing::NAME);
        assert_eq!(BEACONING.version, beaconing::VERSION);
        assert_eq!(find("beaconing"), Some(&BEACONING));
        assert_eq!(BRUTEFORCE.name, bruteforce::NAME);
        assert_eq!(BRUTEFORCE.version, bruteforce::VERSION);
        assert_eq!(find("bruteforce"), Some(&BRUTEFORCE));
        assert_eq!(DNS_TUNNEL.name, dns_tunnel::NAME);
        assert_eq!(DNS_TUNNEL.version, dns_tunnel::VERSION);
        assert_eq!(find("dns-tunnel"), Some(&DNS_TUNNEL));
        assert_eq!(ENCODED_POWERSHELL.name, encoded_powershell::NAME);
        assert_eq!(ENCODED_POWERSHELL.version, encoded_powershell::VERSION);
        assert_eq!(find("encoded-powershell"), Some(&ENCODED_POWERSHELL));
        assert_eq!(IOC_SWEEP.name, ioc_sweep::NAME);
        assert_eq!(IOC_SWEEP.version, ioc_sweep::VERSION);
        assert_eq!(find("ioc-sweep"), Some(&IOC_SWEEP));
        assert_eq!(LATERAL_MOVEMENT.name, lateral_movement::NAME);
        assert_eq!(LATERAL_MOVEMENT.version, lateral_movement::VERSION);
        assert_eq!(find("lateral-movement"), Some(&LATERAL_MOVEMENT));
        assert_eq!(PIVOT.name, pivot::NAME);
        assert_eq!(PIVOT.version, pivot::VERSION);
        assert_eq!(find("pivot"), Some(&PIVOT));
        assert_eq!(QUERY.name, query::NAME);
        assert_eq!(QUERY.version, query::VERSION);
        assert_eq!(find("query"), Some(&QUERY));
        assert_eq!(RARE_PROCESS.name, rare_process::NAME);
        assert_eq!(RARE_PROCESS.version, rare_process::VERSION);
        assert_eq!(find("rare-process"), Some(&RARE_PROCESS));
        assert_eq!(SIGMA.name, sigma::NAME);
        assert_eq!(SIGMA.version, sigma::VERSION);
        assert_eq!(find("sigma"), Some(&SIGMA));
        assert_eq!(find("nope"), None);
        for test_module in &test_modules::ALL {
            assert_eq!(find(test_module.name), None, "test modules are not shipped");
        }
        let names: Vec<_> = all().iter().map(|m| m.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "all() is in name order");
        assert!(format!("{BRUTEFORCE:?}").contains("wasm_len"));
    }
}
