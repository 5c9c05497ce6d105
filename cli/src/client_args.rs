//! The flags every client command shares: which coordinator, which output.

use crate::output::Output;
use clap::{Args, ValueEnum};
use quarry_client::Client;

/// `--coordinator` and `--output`, flattened into every client command.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Coordinator URL.
    #[arg(long, global = true, env = "QUARRY_COORDINATOR", default_value = quarry_client::DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Output format: a table for people, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
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
    Ok(Client::connect(&args.coordinator).await?)
}
