//! The flags every client command shares: which coordinator, how to
//! prove who is calling, which output.

use crate::output::Output;
use clap::{Args, ValueEnum};
use quarry_client::{Client, Credentials, TlsFiles};
use std::path::PathBuf;

/// `--coordinator`, the TLS files and `--output`, flattened into every
/// client command.
#[derive(Args, Clone)]
pub struct ClientArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Output format: a table for people, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `--coordinator`, the TLS files and `--token`: which coordinator, and how
/// to prove who is calling (commands with an output of their own, such as
/// `quarry query`, flatten only these).
#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// Coordinator URL (`https://…` on a TLS cluster).
    #[arg(long, global = true, env = "QUARRY_COORDINATOR", default_value = quarry_client::DEFAULT_COORDINATOR)]
    pub coordinator: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// A bearer token (`quarry token create`), for callers without a
    /// client certificate; with --tls-ca on a TLS cluster.
    #[arg(long, global = true, env = "QUARRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `--tls-ca`, `--tls-cert`, `--tls-key`: the cluster's CA and this
/// party's certificate (made with `quarry certs`). All three, or none for
/// a plaintext development cluster on loopback.
#[derive(Args, Clone, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) that signs the cluster's certificates.
    #[arg(long, global = true, env = "QUARRY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This party's certificate (PEM), naming its role and name.
    #[arg(long, global = true, env = "QUARRY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, global = true, env = "QUARRY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// What a client presents: the CA, its certificate if given, and
    /// `token` if given.
    pub fn credentials(&self, token: Option<String>) -> anyhow::Result<Credentials> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(Credentials {
            ca: self.tls_ca.clone(),
            identity,
            token,
        })
    }

    /// The TLS files, if any were named (an error names the missing ones).
    pub fn files(&self) -> anyhow::Result<Option<TlsFiles>> {
        Ok(TlsFiles::from_flags(
            self.tls_ca.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
        )?)
    }
}

/// `--output`'s values.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
}

/// The output mode for a `--output` value.
pub fn out(format: Format) -> Output {
    match format {
        Format::Table => Output::Table,
        Format::Json => Output::Json,
    }
}

/// Connects to the coordinator the flags name.
pub async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    args.connect.connect().await
}

impl ConnectArgs {
    /// Connects to the coordinator the flags name.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let credentials = self.tls.credentials(self.token.clone())?;
        Ok(Client::connect_as(&self.coordinator, &credentials).await?)
    }
}

/// A `key=value` flag value.
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected key=value, got `{text}`")),
    }
}

/// An RFC 3339 time flag value, as milliseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("`{text}` is not an RFC 3339 time like 2026-11-20T00:00:00Z: {e}"))?;
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis();
    i64::try_from(ms).map_err(|e| e.to_string())
}
