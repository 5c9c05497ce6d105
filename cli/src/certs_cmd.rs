//! `quarry certs`: a CA and certificates for a test or small cluster.

use clap::Subcommand;
use quarry_security::{Principal, Role, certs};
use std::path::PathBuf;

/// `quarry certs` subcommands.
#[derive(Subcommand)]
pub enum CertsCommand {
    /// Make a certificate authority: `ca.pem` (give it to every node and
    /// client as --tls-ca) and `ca.key` (keep it off the cluster).
    #[command(after_help = "Example:\n  quarry certs init --dir ./pki")]
    Init {
        /// Directory to write `ca.pem` and `ca.key` into (created, mode 0700).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Quarry CA")]
        name: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..))]
        days: u32,
    },
    /// Issue a certificate signed by the CA, naming a coordinator (its node
    /// id), a worker (its worker id) or a caller and its role. Writes
    /// `<role>-<name>.pem` and `<role>-<name>.key`.
    #[command(
        after_help = "Examples:\n  quarry certs issue --dir ./pki --role coordinator --name 1 --host 10.0.0.5 --host coord1.example.org\n  quarry certs issue --dir ./pki --role worker --name worker-a --host 10.0.0.21\n  quarry certs issue --dir ./pki --role hunter --name alice"
    )]
    Issue {
        /// Directory holding the CA (`ca.pem`, `ca.key`).
        #[arg(long)]
        dir: PathBuf,
        /// coordinator, worker, admin, hunter, automation or viewer.
        #[arg(long)]
        role: Role,
        /// A coordinator's node id, a worker's id, or the caller's name.
        #[arg(long)]
        name: String,
        /// Host name or IP address clients dial this node at (repeatable;
        /// nodes default to localhost and 127.0.0.1).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..))]
        days: u32,
        /// Directory to write into (default: --dir).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a `quarry certs` command.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir, name, days } => {
            let ca = certs::init_ca(&dir, &name, days)?;
            println!("wrote {} and {}", ca.cert.display(), ca.key.display());
            println!(
                "  next: quarry certs issue --dir {} --role coordinator --name 1 --host <address clients dial>",
                dir.display()
            );
        }
        CertsCommand::Issue {
            dir,
            role,
            name,
            mut hosts,
            days,
            out,
        } => {
            if role == Role::Coordinator && !name.parse::<u64>().is_ok_and(|id| id > 0) {
                anyhow::bail!(
                    "a coordinator's certificate names its raft node id (a number from 1), not {name:?}"
                );
            }
            let principal = Principal::new(role, name)?;
            if hosts.is_empty() && role.is_node() {
                hosts = vec!["localhost".into(), "127.0.0.1".into()];
            }
            let out = out.unwrap_or_else(|| dir.clone());
            let issued = certs::issue(&dir, &principal, &hosts, days, &out)?;
            println!(
                "wrote {} and {} for {principal}",
                issued.cert.display(),
                issued.key.display()
            );
            println!(
                "  use: --tls-ca {} --tls-cert {} --tls-key {}",
                dir.join(certs::CA_CERT).display(),
                issued.cert.display(),
                issued.key.display()
            );
        }
    }
    Ok(())
}
