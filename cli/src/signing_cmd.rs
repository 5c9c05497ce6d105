//! Module signing on the command line: `quarry module keygen|sign`, the
//! signature `quarry module upload` sends, and `quarry cluster
//! trust-key|untrust-key|trusted-keys|require-signed-modules`
//! (docs/security.md, "Signed modules").

use crate::client_args::{ClientArgs, connect, out};
use crate::output::{Output, json_line, table, time};
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use quarry_proto::v1;
use quarry_security::module_sign;
use serde_json::json;
use std::path::{Path, PathBuf};

/// `quarry module keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// Key name (letters, digits, `-`, `_`, `.`): the files are NAME.key
    /// and NAME.pub.
    #[arg(long)]
    name: String,
    /// Directory to write them in.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// `quarry module sign`.
#[derive(Args)]
pub struct SignArgs {
    /// The .wasm file.
    file: PathBuf,
    /// The private key (NAME.key from `quarry module keygen`, or any
    /// ed25519 PKCS#8 PEM key).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the signature (default: FILE.sig).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `quarry cluster trust-key`.
#[derive(Args)]
pub struct TrustKeyArgs {
    /// A name for the key (shown as the signer of the modules it signed).
    #[arg(long)]
    name: String,
    /// The public key: a NAME.pub file, or its 64 hex digits.
    #[arg(long)]
    public_key: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `quarry cluster untrust-key`.
#[derive(Args)]
pub struct UntrustKeyArgs {
    /// The key's name (`quarry cluster trusted-keys`).
    #[arg(long)]
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `on` or `off`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Switch {
    /// Required.
    On,
    /// Not required.
    Off,
}

/// `quarry cluster require-signed-modules`.
#[derive(Args)]
pub struct PolicyArgs {
    /// `on`: uploads without a valid signature are refused and workers
    /// refuse to run unsigned modules, those uploaded earlier included.
    #[arg(value_enum)]
    switch: Switch,
    #[command(flatten)]
    client: ClientArgs,
}

/// Makes a signing key pair.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let (key, public) = module_sign::keygen(&args.dir, &args.name)?;
    println!("{}", public.display());
    eprintln!(
        "signing key {} (keep it private, off the cluster) and public key {}; an admin trusts it with `quarry cluster trust-key --name {} --public-key {}`",
        key.display(),
        public.display(),
        args.name,
        public.display()
    );
    Ok(())
}

/// The signature file beside `module`.
pub fn signature_path(module: &Path) -> PathBuf {
    let mut name = module.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Signs a module file.
pub fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let digest = quarry_worker::runtime::module_digest(&bytes);
    let signature = module_sign::sign(&args.key, digest.as_str())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| signature_path(&args.file));
    std::fs::write(&out, format!("{signature}\n"))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", out.display());
    eprintln!(
        "signed sha256 {digest}; `quarry module upload {}` sends {} with it",
        args.file.display(),
        out.display()
    );
    Ok(())
}

/// The signature to upload with `module`: `explicit`, else the `.sig`
/// file beside it if there is one.
pub fn signature_for_upload(
    module: &Path,
    explicit: Option<&Path>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let beside = signature_path(module);
    let path = match explicit {
        Some(path) => path.to_owned(),
        None if beside.exists() => beside,
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read signature {}", path.display()))?;
    let signature = module_sign::parse_signature(&text)
        .with_context(|| format!("signature {}", path.display()))?;
    Ok(Some(signature))
}

fn keys(format: Output, response: &v1::TrustedKeysResponse) {
    match format {
        Output::Json => {
            json_line(json!({
                "require_signed": response.require_signed,
                "keys": response.keys.iter().map(|k| json!({
                    "name": k.name, "public_key": k.public_key,
                    "added_by": k.added_by, "added": time(k.added_ms),
                })).collect::<Vec<_>>(),
            }));
        }
        Output::Table => {
            table(
                &["NAME", "PUBLIC KEY", "ADDED BY", "ADDED"],
                response
                    .keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.name.clone(),
                            k.public_key.clone(),
                            k.added_by.clone(),
                            time(k.added_ms),
                        ]
                    })
                    .collect(),
            );
            eprintln!(
                "signed modules {}",
                if response.require_signed {
                    "required: unsigned modules are refused at upload and on workers"
                } else {
                    "not required (`quarry cluster require-signed-modules on` requires them)"
                }
            );
        }
    }
}

/// The hex of a public key given as a file or as hex.
fn public_key_text(value: &str) -> anyhow::Result<String> {
    let text = if Path::new(value).is_file() {
        std::fs::read_to_string(value).with_context(|| format!("cannot read {value}"))?
    } else {
        value.to_owned()
    };
    module_sign::parse_public_key(&text)?;
    Ok(text.trim().to_owned())
}

/// `quarry cluster trust-key`.
pub async fn trust_key(args: &TrustKeyArgs) -> anyhow::Result<()> {
    let public_key = public_key_text(&args.public_key)?;
    let response = connect(&args.client)
        .await?
        .trust_key(&args.name, &public_key)
        .await?;
    keys(out(args.client.output), &response);
    Ok(())
}

/// `quarry cluster untrust-key`.
pub async fn untrust_key(args: &UntrustKeyArgs) -> anyhow::Result<()> {
    let response = connect(&args.client).await?.untrust_key(&args.name).await?;
    keys(out(args.client.output), &response);
    Ok(())
}

/// `quarry cluster trusted-keys`.
pub async fn trusted_keys(client: &ClientArgs) -> anyhow::Result<()> {
    let response = connect(client).await?.trusted_keys().await?;
    keys(out(client.output), &response);
    Ok(())
}

/// `quarry cluster require-signed-modules`.
pub async fn require_signed(args: &PolicyArgs) -> anyhow::Result<()> {
    let response = connect(&args.client)
        .await?
        .set_module_policy(matches!(args.switch, Switch::On))
        .await?;
    keys(out(args.client.output), &response);
    Ok(())
}
