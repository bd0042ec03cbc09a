//! The `mxguard` command line: one module per subcommand.

pub mod check_config;
pub mod passwd;
pub mod queue;
pub mod route;
pub mod serve;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// mxguard: an SMTP server that keeps spam out and spammers from using it.
#[derive(Parser, Debug)]
#[command(name = "mxguard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server in the foreground; logs go to stderr.
    Serve {
        /// The configuration file (default ./mxguard.toml, then /etc/mxguard/mxguard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Parse and validate the configuration, print warnings; exit 1 on error.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Refuse (or stop refusing) an address or network at connect.
    Ban {
        #[command(subcommand)]
        action: BanAction,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Show which lists, bans, DNSBL answers and reverse DNS apply to an address.
    CheckIp {
        ip: std::net::IpAddr,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show how an address is routed and whether it may be relayed, record
    /// by record (like CommuniGate's router test); offline, without DNS.
    Route {
        /// The address, with or without <>.
        address: String,
        /// The client's IP address (default: any, taken as 0.0.0.0).
        #[arg(long)]
        from: Option<std::net::IpAddr>,
        /// The account (address or alias) the client authenticated as.
        #[arg(long)]
        auth: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Read a password (one line of standard input; asked for without echo
    /// on a terminal) and print its argon2id hash for an account's `password`.
    Passwd {
        /// Read one line of standard input even from a terminal: no prompt,
        /// no confirmation.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Tell the running server to reload (renews the TLS certificate); SIGHUP does the same.
    Reload {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Look at and act on the running server's queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueAction {
    /// Every queued message with each recipient's state, next attempt and last error.
    List,
    /// One message in detail.
    Show { id: String },
    /// Try every waiting message now.
    Flush,
    /// Remove a message without bouncing it.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub enum BanAction {
    /// Ban an address or CIDR network.
    Add {
        net: String,
        /// How long, e.g. "1h", "30m", "7d".
        #[arg(long = "for", default_value = "1d")]
        duration: String,
    },
    /// Lift a ban.
    Remove { net: String },
    /// Every ban in force.
    List,
}

impl BanAction {
    /// The control socket request for this action.
    pub fn request(&self) -> anyhow::Result<String> {
        Ok(match self {
            BanAction::Add { net, duration } => {
                let d = mxguard_config::parse_duration(duration).map_err(anyhow::Error::msg)?;
                format!("ban add {net} {}", d.as_secs())
            }
            BanAction::Remove { net } => format!("ban remove {net}"),
            BanAction::List => "ban list".into(),
        })
    }
}

impl QueueAction {
    /// The control socket request for this action.
    pub fn request(&self) -> String {
        match self {
            QueueAction::List => "queue list".into(),
            QueueAction::Show { id } => format!("queue show {id}"),
            QueueAction::Flush => "queue flush".into(),
            QueueAction::Delete { id } => format!("queue delete {id}"),
        }
    }
}

const DEFAULT_PATHS: [&str; 2] = ["./mxguard.toml", "/etc/mxguard/mxguard.toml"];

/// The configuration file to read: the one given, or the first default
/// that exists.
pub fn config_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    DEFAULT_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no configuration file: none given with --config, and neither {} nor {} exists",
                DEFAULT_PATHS[0],
                DEFAULT_PATHS[1]
            )
        })
}
