//! Test module `poll-forever`: in `scan`, polls forever.
//!
//! - `on=clock` (default): subscribes to a monotonic-clock duration that is
//!   never reached (`u64::MAX` ns) and polls it in a loop; with real WASI
//!   clocks that blocks inside the host.
//! - `on=stdin`: polls stdin's pollable in a loop forever (each poll returns
//!   at once: the loop itself must meet the CPU deadline).
//!
//! The WASI functions are imported by hand (their canonical-ABI core
//! signatures), as std offers no way to poll.

use quarry_sdk::{Descriptor, Emitter, Event, Hunt, Output, Params};

#[cfg(target_arch = "wasm32")]
mod wasi {
    #[link(wasm_import_module = "wasi:clocks/monotonic-clock@0.2.6")]
    unsafe extern "C" {
        #[link_name = "subscribe-duration"]
        pub fn subscribe_duration(nanos: i64) -> i32;
    }

    #[link(wasm_import_module = "wasi:io/poll@0.2.6")]
    unsafe extern "C" {
        /// `poll(list<borrow<pollable>>) -> list<u32>`: the result (pointer,
        /// length) is written at `ret`.
        #[link_name = "poll"]
        pub fn poll(list: *const i32, len: usize, ret: *mut [usize; 2]);
    }

    #[link(wasm_import_module = "wasi:cli/stdin@0.2.6")]
    unsafe extern "C" {
        #[link_name = "get-stdin"]
        pub fn get_stdin() -> i32;
    }

    #[link(wasm_import_module = "wasi:io/streams@0.2.6")]
    unsafe extern "C" {
        #[link_name = "[method]input-stream.subscribe"]
        pub fn input_stream_subscribe(stream: i32) -> i32;
    }
}

/// The hunt.
pub struct PollForever {
    on_stdin: bool,
}

impl Hunt for PollForever {
    fn describe() -> Descriptor {
        Descriptor::new("poll-forever", env!("CARGO_PKG_VERSION")).with_fields(&["EventID"])
    }

    fn new(params: &Params) -> Result<Self, String> {
        params.ensure_known(&["on"])?;
        let on_stdin = match params.get("on").unwrap_or("clock") {
            "clock" => false,
            "stdin" => true,
            other => return Err(format!("on: expected clock or stdin, got {other}")),
        };
        Ok(PollForever { on_stdin })
    }

    fn scan(&mut self, _: &[Event], _: &mut Emitter) -> Result<(), String> {
        #[cfg(target_arch = "wasm32")]
        {
            // SAFETY: the imports are the canonical-ABI lowering of the WASI
            // functions named; handles come from the host.
            let pollable = unsafe {
                if self.on_stdin {
                    wasi::input_stream_subscribe(wasi::get_stdin())
                } else {
                    wasi::subscribe_duration(-1)
                }
            };
            let list = [pollable];
            loop {
                let mut ret = [0usize; 2];
                unsafe { wasi::poll(list.as_ptr(), list.len(), &mut ret) };
                std::hint::black_box(ret);
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.on_stdin;
            Ok(())
        }
    }

    fn finish(self, _: &mut Output) {}
}

quarry_sdk::export_hunt!(PollForever);
