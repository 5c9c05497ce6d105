//! Generates the tonic/prost code for `quarry.v1` with a vendored protoc, so a
//! fresh machine needs no system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; this only affects this process.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("quarry_descriptor.bin"))
        .compile_protos(&["proto/quarry/v1/quarry.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
