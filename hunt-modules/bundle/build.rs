//! Compiles the shipped hunt modules to wasm32-wasip2 components and copies
//! them into `OUT_DIR`, where `src/lib.rs` embeds them.
//!
//! The modules are built by a nested `cargo build --release --target
//! wasm32-wasip2` on this same workspace, with its own target directory
//! (`<outer target dir>/hunt-modules`): sharing the outer one would deadlock
//! on its lock, and a per-build-script directory would rebuild the modules
//! from scratch for every profile and hash. The child's environment is
//! scrubbed of everything that describes the outer build (its target,
//! flags, wrappers, build-script variables), which would otherwise leak
//! into a build for a different target; the jobserver is kept, so the nested
//! build shares the outer build's job slots.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

/// A module crate of the workspace that is shipped in the bundle.
struct Module {
    /// Cargo package name; the artifact is `<name with _>.wasm`.
    package: &'static str,
    /// Crate directory, relative to the workspace root.
    dir: &'static str,
}

const MODULES: &[Module] = &[
    Module {
        package: "beaconing",
        dir: "hunt-modules/beaconing",
    },
    Module {
        package: "bruteforce",
        dir: "hunt-modules/bruteforce",
    },
    Module {
        package: "dns-tunnel",
        dir: "hunt-modules/dns-tunnel",
    },
    Module {
        package: "encoded-powershell",
        dir: "hunt-modules/encoded-powershell",
    },
    Module {
        package: "ioc-sweep",
        dir: "hunt-modules/ioc-sweep",
    },
    Module {
        package: "lateral-movement",
        dir: "hunt-modules/lateral-movement",
    },
    Module {
        package: "pivot",
        dir: "hunt-modules/pivot",
    },
    Module {
        package: "query",
        dir: "hunt-modules/query",
    },
    Module {
        package: "rare-process",
        dir: "hunt-modules/rare-process",
    },
    Module {
        package: "sigma",
        dir: "hunt-modules/sigma",
    },
];

/// Misbehaving (and no-op) modules for the worker's sandbox tests and the
/// benchmark, built by the same nested cargo invocation but exposed apart
/// from the shipped ones (`test_modules` in `src/lib.rs`), so they are never
/// registered as shipped modules.
const TEST_MODULES: &[Module] = &[
    Module {
        package: "test-noop",
        dir: "hunt-modules/test-modules/noop",
    },
    Module {
        package: "test-runaway-loop",
        dir: "hunt-modules/test-modules/runaway-loop",
    },
    Module {
        package: "test-memory-hog",
        dir: "hunt-modules/test-modules/memory-hog",
    },
    Module {
        package: "test-trap-panic",
        dir: "hunt-modules/test-modules/trap-panic",
    },
    Module {
        package: "test-output-flood",
        dir: "hunt-modules/test-modules/output-flood",
    },
    Module {
        package: "test-stdout-flood",
        dir: "hunt-modules/test-modules/stdout-flood",
    },
    Module {
        package: "test-rare-match",
        dir: "hunt-modules/test-modules/rare-match",
    },
    Module {
        package: "test-aggregates",
        dir: "hunt-modules/test-modules/aggregates",
    },
    Module {
        package: "test-sleeper",
        dir: "hunt-modules/test-modules/sleeper",
    },
    Module {
        package: "test-poll-forever",
        dir: "hunt-modules/test-modules/poll-forever",
    },
    Module {
        package: "test-host-abuse",
        dir: "hunt-modules/test-modules/host-abuse",
    },
    Module {
        package: "test-wide-descriptor",
        dir: "hunt-modules/test-modules/wide-descriptor",
    },
    Module {
        package: "test-empty-flood",
        dir: "hunt-modules/test-modules/empty-flood",
    },
    Module {
        package: "test-planner",
        dir: "hunt-modules/test-modules/planner",
    },
    Module {
        package: "test-spinner",
        dir: "hunt-modules/test-modules/spinner",
    },
];

/// Inputs of the modules besides their own crates. Directories are scanned
/// recursively by cargo.
const SHARED_INPUTS: &[&str] = &[
    "sdk/wit",
    "sdk/quarry-sdk/src",
    "sdk/quarry-sdk/Cargo.toml",
    // The merge rules and intel parsing the SDK builds on.
    "sdk/contract/src",
    "sdk/contract/Cargo.toml",
    // Dependency versions (wit-bindgen) of the modules.
    "Cargo.lock",
];

/// Environment variables of the outer build that the nested cargo keeps.
/// Everything else named `CARGO_*` describes the outer build (its target,
/// target dir, flags, the package being built, cfg values, features) and
/// would leak into the wasm build.
const KEPT_CARGO_VARS: &[&str] = &[
    "CARGO_HOME",
    // The jobserver: the nested build takes its job slots from the outer one.
    "CARGO_MAKEFLAGS",
    "CARGO_NET_",
    "CARGO_HTTP_",
    "CARGO_REGISTRIES_",
    "CARGO_REGISTRY_",
    "CARGO_TERM_",
    "CARGO_LOG",
    "CARGO_INCREMENTAL",
    "CARGO_BUILD_JOBS",
    // Settings aimed at the module builds on purpose.
    "CARGO_PROFILE_RELEASE_",
    "CARGO_TARGET_WASM32_WASIP2_",
];

/// Other variables set for this build script that would change the nested
/// build: flags for the outer target, clippy's wrapper, build-script inputs.
const REMOVED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_LINKER",
    "RUSTDOC",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "OPT_LEVEL",
    "PROFILE",
    "DEBUG",
    "NUM_JOBS",
];

fn main() {
    if let Err(message) = build() {
        // Cargo shows a failing build script's stderr; make it the whole story.
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(required_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(required_var("OUT_DIR")?);
    let workspace = manifest_dir.join("../..").canonicalize().map_err(|e| {
        format!(
            "cannot find the workspace root above {}: {e}",
            manifest_dir.display()
        )
    })?;
    let workspace_manifest = workspace.join("Cargo.toml");

    for input in SHARED_INPUTS {
        rerun_if_changed(&workspace.join(input));
    }
    for module in MODULES.iter().chain(TEST_MODULES) {
        // `src` and the manifest, not the whole crate: its tests do not
        // change the component.
        rerun_if_changed(&workspace.join(module.dir).join("src"));
        rerun_if_changed(&workspace.join(module.dir).join("Cargo.toml"));
    }

    let target_dir = nested_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--manifest-path",
        ])
        .arg(&workspace_manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&workspace);
    for module in MODULES.iter().chain(TEST_MODULES) {
        command.args(["-p", module.package]);
    }
    scrub_environment(&mut command);

    let reproduce = format!(
        "cargo build --release --target {WASM_TARGET} --manifest-path {} --target-dir {} {}",
        workspace_manifest.display(),
        target_dir.display(),
        MODULES
            .iter()
            .chain(TEST_MODULES)
            .map(|m| format!("-p {}", m.package))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let output = command.output().map_err(|e| {
        format!(
            "cannot run `{}` to compile the hunt modules: {e}",
            Path::new(&cargo).display()
        )
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(explain_failure(&stderr, &reproduce));
    }
    // The nested build's output is swallowed on success; say so when the
    // modules have warnings, or they would go unnoticed.
    if stderr.lines().any(|line| line.starts_with("warning:")) {
        println!(
            "cargo:warning=the hunt modules compiled with warnings; to see them run: {reproduce}"
        );
    }

    for module in TEST_MODULES {
        // No version variable: test modules are not registered by version.
        copy_component(&target_dir, &out_dir, module)?;
    }
    for module in MODULES {
        copy_component(&target_dir, &out_dir, module)?;
        let version = package_version(
            &workspace.join(module.dir).join("Cargo.toml"),
            &workspace_manifest,
        )?;
        println!(
            "cargo:rustc-env=QUARRY_MODULE_VERSION_{}={version}",
            module.package.to_uppercase().replace('-', "_")
        );
    }
    Ok(())
}

/// Checks a module's built component and copies it into `OUT_DIR`.
fn copy_component(target_dir: &Path, out_dir: &Path, module: &Module) -> Result<(), String> {
    let file_name = artifact_name(module.package);
    let artifact = target_dir
        .join(WASM_TARGET)
        .join("release")
        .join(&file_name);
    let wasm = fs::read(&artifact).map_err(|e| {
            format!(
                "the nested build succeeded but {} is missing ({e}); does `{}` still have `crate-type = [\"cdylib\", ...]`?",
                artifact.display(),
                module.package
            )
        })?;
    check_component(&wasm, &artifact)?;
    write_if_changed(&out_dir.join(&file_name), &wasm)
}

fn required_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set `{name}`; run this build through cargo"))
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

fn artifact_name(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

/// `<outer target dir>/hunt-modules`, from `OUT_DIR`, which cargo lays out as
/// `<target dir>/[<triple>/]<profile>/build/<package>-<hash>/out`.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    let ancestors: Vec<&Path> = out_dir.ancestors().collect();
    let in_build_dir = ancestors.get(2).and_then(|p| p.file_name()) == Some(OsStr::new("build"));
    if let (true, Some(&above_profile)) = (in_build_dir, ancestors.get(4)) {
        // With `--target <triple>`, the profile directory sits in a directory
        // named after the triple.
        let target = env::var("TARGET").unwrap_or_default();
        let target_dir = match above_profile.parent() {
            Some(parent) if above_profile.file_name() == Some(OsStr::new(&target)) => parent,
            _ => above_profile,
        };
        return target_dir.join("hunt-modules");
    }
    // An unfamiliar layout: still correct, only slower (one module build per
    // build-script hash).
    println!(
        "cargo:warning=unexpected OUT_DIR layout ({}); building the hunt modules under it",
        out_dir.display()
    );
    out_dir.join("hunt-modules-target")
}

fn scrub_environment(command: &mut Command) {
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else {
            continue;
        };
        let outer_cargo_var = (name.starts_with("CARGO_") || name.starts_with("__CARGO"))
            && !KEPT_CARGO_VARS.iter().any(|kept| name.starts_with(kept));
        if outer_cargo_var || REMOVED_VARS.contains(&name) {
            command.env_remove(name);
        }
    }
    // `CARGO` is the outer cargo's path; the child sets its own.
    command.env_remove("CARGO");
}

fn explain_failure(stderr: &str, reproduce: &str) -> String {
    // Progress lines are noise next to the actual errors.
    let details: String = stderr
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !(line.starts_with("Compiling ")
                || line.starts_with("Blocking ")
                || line.starts_with("Updating ")
                || line.starts_with("Downloaded ")
                || line.starts_with("Downloading "))
        })
        .collect::<Vec<_>>()
        .join("\n");
    if target_missing(stderr) {
        return format!(
            "the {WASM_TARGET} target is not installed for this Rust toolchain, so the shipped hunt \
             modules cannot be compiled.\nRun `rustup target add {WASM_TARGET}` and build again.\n\n\
             The nested cargo said:\n{details}"
        );
    }
    format!(
        "compiling the shipped hunt modules to {WASM_TARGET} failed.\nReproduce with:\n    \
         {reproduce}\n\nThe nested cargo said:\n{details}"
    )
}

/// Whether the failure is the missing standard library for the wasm target:
/// from the compiler's own message, or, failing that, from rustup.
fn target_missing(stderr: &str) -> bool {
    let says_so = [
        "target may not be installed",
        "can't find crate for `core`",
        "can't find crate for `std`",
    ]
    .iter()
    .any(|needle| stderr.contains(needle));
    if says_so {
        return true;
    }
    // rustup answers for the toolchain this build runs under (it exports
    // RUSTUP_TOOLCHAIN to cargo and its children).
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .is_some_and(|output| {
            !String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|line| line.trim() == WASM_TARGET)
        })
}

/// The module must be a component (layer 1), not a core module: the worker
/// only instantiates components.
fn check_component(wasm: &[u8], path: &Path) -> Result<(), String> {
    const MAGIC: &[u8] = b"\0asm";
    const COMPONENT_VERSION: &[u8] = &[0x0d, 0x00, 0x01, 0x00];
    if wasm.get(..4) != Some(MAGIC) {
        return Err(format!("{} is not a WebAssembly binary", path.display()));
    }
    if wasm.get(4..8) != Some(COMPONENT_VERSION) {
        return Err(format!(
            "{} is a core wasm module, not a component; the {WASM_TARGET} target normally links \
             components with `wasm-component-ld` (shipped with the target): reinstall it with \
             `rustup target add {WASM_TARGET}` and check that no linker override is configured for it",
            path.display()
        ));
    }
    Ok(())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    // Rewriting identical bytes would bump the mtime and recompile the crate
    // that embeds them.
    if fs::read(path).is_ok_and(|existing| existing == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The `version` of a module's `[package]`, following `version.workspace =
/// true` to `[workspace.package]`.
fn package_version(manifest: &Path, workspace_manifest: &Path) -> Result<String, String> {
    let text = read(manifest)?;
    match table_value(&text, "package", "version") {
        Some(TomlValue::String(version)) => Ok(version),
        Some(TomlValue::Workspace) => {
            match table_value(&read(workspace_manifest)?, "workspace.package", "version") {
                Some(TomlValue::String(version)) => Ok(version),
                _ => Err(format!(
                    "{} inherits `version` from the workspace, but {} has no `[workspace.package] version = \"…\"`",
                    manifest.display(),
                    workspace_manifest.display()
                )),
            }
        }
        None => Err(format!(
            "cannot find `version = \"…\"` in the [package] table of {}",
            manifest.display()
        )),
    }
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

enum TomlValue {
    String(String),
    Workspace,
}

/// `key` in `[table]` of a Cargo manifest: enough TOML for `version = "x"`
/// and `version.workspace = true`, which is all manifests here use.
fn table_value(text: &str, table: &str, key: &str) -> Option<TomlValue> {
    let mut in_table = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            in_table = header.trim_end_matches(']').trim() == table;
            continue;
        }
        if !in_table {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name == key {
            let value = value.strip_prefix('"')?;
            return Some(TomlValue::String(value[..value.find('"')?].to_owned()));
        }
        if name == format!("{key}.workspace") && value.starts_with("true") {
            return Some(TomlValue::Workspace);
        }
    }
    None
}
