//! This process's memory as the kernel counts it (Linux `/proc/self`), for
//! the benchmark's peak-RSS figures and the sandbox's leak checks. Elsewhere
//! every function answers `None` / `false`.

const STATUS: &str = "/proc/self/status";

/// Resident set size now, in bytes.
pub fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// Highest resident set size since the process started or since the last
/// [`reset_peak`], in bytes.
pub fn peak_resident_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Restarts the peak ([`peak_resident_bytes`]) from the current RSS, so a
/// phase's peak is not the previous phase's. Writing `5` to `clear_refs`
/// does that (Linux 4.0 and later); `false` when it could not.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(STATUS).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn peak_follows_a_large_allocation_and_resets() {
        let before = resident_bytes().expect("VmRSS on Linux");
        assert!(before > 0);
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let peak = peak_resident_bytes().expect("VmHWM on Linux");
        assert!(peak >= before + (60 << 20), "peak {peak} before {before}");
        drop(big);
        assert!(reset_peak(), "clear_refs is writable for our own process");
        let after = peak_resident_bytes().expect("VmHWM on Linux");
        assert!(after < peak, "peak {after} was not reset from {peak}");
    }
}
