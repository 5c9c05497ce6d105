//! Validation of uploaded modules before they reach the log: the bytes must
//! be a valid WebAssembly component that exports the hunt interface.

use crate::error::CoordinatorError;
use wasmparser::{Parser, Payload, Validator, WasmFeatures};

/// The interface every hunt module exports: contract 0.2 (any patch). 0.1
/// modules return aggregates in a form this coordinator cannot merge.
pub const MODULE_INTERFACE_PREFIX: &str = "quarry:hunt/module@0.2.";

/// Checks that `bytes` is a hunt-module component.
pub fn check_component(bytes: &[u8]) -> Result<(), CoordinatorError> {
    let invalid = |detail: String| {
        CoordinatorError::InvalidArgument(format!(
            "the upload is not a valid hunt module: {detail}. Build modules with `cargo build --target wasm32-wasip2` against quarry-sdk"
        ))
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(invalid(
            "it does not start with the WebAssembly magic bytes `\\0asm`".to_owned(),
        ));
    }
    if !Parser::is_component(bytes) {
        return Err(invalid(
            "it is a core WebAssembly module, not a component (target wasm32-wasip2 produces components)".to_owned(),
        ));
    }
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| {
            invalid(format!(
                "validation failed at byte offset {}: {}",
                e.offset(),
                e.message()
            ))
        })?;
    let mut depth = 0usize;
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| {
            invalid(format!(
                "parse error at byte offset {}: {}",
                e.offset(),
                e.message()
            ))
        })?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = export.map_err(|e| invalid(e.message().to_owned()))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    if !exports
        .iter()
        .any(|name| name.starts_with(MODULE_INTERFACE_PREFIX))
    {
        return Err(invalid(format!(
            "it does not export `{MODULE_INTERFACE_PREFIX}x` (exports: {})",
            if exports.is_empty() {
                "none".to_owned()
            } else {
                exports.join(", ")
            }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_core_modules_are_refused_with_the_reason() {
        let err = check_component(b"hello world, not wasm").expect_err("garbage");
        assert!(err.to_string().contains("magic"), "{err}");
        // A minimal core module: magic + version 1.
        let err = check_component(b"\0asm\x01\0\0\0").expect_err("core");
        assert!(err.to_string().contains("core WebAssembly module"), "{err}");
        // A component header with a truncated body.
        let err = check_component(b"\0asm\x0d\0\x01\0\x07\x05").expect_err("truncated");
        assert!(err.to_string().contains("byte offset"), "{err}");
    }
}
