//! Test module `host-abuse`: in `scan`, asks a host function for a huge
//! amount, chosen by the parameter `call`:
//!
//! - `random`: `wasi:random/random.get-random-bytes(len)` with `len` (default
//!   2^40) bytes;
//! - `insecure-random`: the same through `wasi:random/insecure`;
//! - `log`: `host.log` `times` times (default 10), each with a message of
//!   `message_bytes` (default 1 MiB) and `fields` (default 4,000,000) empty
//!   fields (lowered by hand: 16 bytes of guest memory per field, where the
//!   host would need a `(String, String)` each to lift them).
//!
//! Each must stay bounded on the host: a named refusal for the first two, a
//! bounded log (and bounded host memory) for the last.
//!
//! With `at=finish` the calls are made in `finish` instead. After them the
//! module returns `findings` findings (default 0) with `evidence_bytes`
//! bytes of evidence each (default 0): what it passed to host calls must not
//! reduce what it may return.

// The raw host calls exist only on wasm32; a host build (the workspace's
// `cargo check`) just type-checks the rest.
#![cfg_attr(not(target_arch = "wasm32"), allow(unused))]

use quarry_sdk::{Descriptor, Emitter, Event, Finding, Hunt, LogLevel, Output, Params};

#[cfg(target_arch = "wasm32")]
mod wasi {
    #[link(wasm_import_module = "wasi:random/random@0.2.6")]
    unsafe extern "C" {
        /// `get-random-bytes(len: u64) -> list<u8>`, the list written at `ret`.
        #[link_name = "get-random-bytes"]
        pub fn get_random_bytes(len: i64, ret: *mut [usize; 2]);
    }

    #[link(wasm_import_module = "quarry:hunt/host@0.2.1")]
    unsafe extern "C" {
        /// `log(level, message: string, fields: list<tuple<string, string>>)`.
        #[link_name = "log"]
        pub fn log(level: i32, message: *const u8, len: usize, fields: *const u8, count: usize);
    }

    #[link(wasm_import_module = "wasi:random/insecure@0.2.6")]
    unsafe extern "C" {
        #[link_name = "get-insecure-random-bytes"]
        pub fn get_insecure_random_bytes(len: i64, ret: *mut [usize; 2]);
    }
}

/// The hunt.
pub struct HostAbuse {
    call: String,
    len: u64,
    times: u64,
    message_bytes: u64,
    fields: u64,
    in_finish: bool,
    findings: u64,
    evidence_bytes: u64,
    done: bool,
}

impl Hunt for HostAbuse {
    fn describe() -> Descriptor {
        Descriptor::new("host-abuse", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(params: &Params) -> Result<Self, String> {
        params.ensure_known(&[
            "call",
            "len",
            "times",
            "message_bytes",
            "fields",
            "at",
            "findings",
            "evidence_bytes",
        ])?;
        let call = params.str_or("call", "random");
        if !["random", "insecure-random", "log"].contains(&call) {
            return Err(format!("call: unknown {call}"));
        }
        let in_finish = match params.str_or("at", "scan") {
            "scan" => false,
            "finish" => true,
            other => return Err(format!("at: expected scan or finish, got {other}")),
        };
        Ok(HostAbuse {
            call: call.to_owned(),
            len: params.u64_or("len", 1 << 40)?,
            times: params.u64_or("times", 10)?,
            message_bytes: params.u64_or("message_bytes", 1 << 20)?,
            fields: params.u64_or("fields", 4_000_000)?,
            in_finish,
            findings: params.u64_or("findings", 0)?,
            evidence_bytes: params.u64_or("evidence_bytes", 0)?,
            done: false,
        })
    }

    fn scan(&mut self, _: &[Event], out: &mut Emitter) -> Result<(), String> {
        if self.in_finish || self.done {
            return Ok(());
        }
        self.done = true;
        self.abuse();
        for finding in self.output() {
            out.emit(finding);
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        if self.in_finish {
            self.abuse();
            for finding in self.output() {
                out.emit(finding);
            }
        }
    }
}

impl HostAbuse {
    fn abuse(&self) {
        match self.call.as_str() {
            "random" | "insecure-random" => {
                #[cfg(target_arch = "wasm32")]
                {
                    let mut ret = [0usize; 2];
                    // SAFETY: canonical-ABI lowering of the WASI functions.
                    unsafe {
                        if self.call == "random" {
                            wasi::get_random_bytes(self.len as i64, &mut ret);
                        } else {
                            wasi::get_insecure_random_bytes(self.len as i64, &mut ret);
                        }
                    }
                    std::hint::black_box(ret);
                }
            }
            "log" => {
                let message = "m".repeat(self.message_bytes as usize);
                // Each field is (pointer, length, pointer, length): all zero
                // is two empty strings. Words, for the list's alignment.
                let fields = vec![0u32; self.fields as usize * 4];
                for _ in 0..self.times {
                    #[cfg(target_arch = "wasm32")]
                    // SAFETY: canonical-ABI lowering of `host.log`.
                    unsafe {
                        wasi::log(
                            LogLevel::Info as i32,
                            message.as_ptr(),
                            message.len(),
                            fields.as_ptr().cast(),
                            self.fields as usize,
                        );
                    }
                    std::hint::black_box(&fields);
                }
            }
            // `new` refused any other call.
            _ => {}
        }
    }

    fn output(&self) -> impl Iterator<Item = Finding> {
        let evidence = "x".repeat(self.evidence_bytes as usize);
        (0..self.findings).map(move |i| {
            Finding::builder("host-abuse/output", format!("output {i}"))
                .evidence("blob", &evidence)
                .into()
        })
    }
}

quarry_sdk::export_hunt!(HostAbuse);
