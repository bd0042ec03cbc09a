use clap::Parser;
use mxguard::cli::{self, Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() {
    let args = Cli::parse();
    let code = match args.command {
        Command::Serve { config } => {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            match cli::serve::run(config) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        Command::CheckConfig { config } => cli::check_config::run(config),
        Command::Passwd { password_stdin } => cli::passwd::run(password_stdin),
        Command::Ban { action, config } => {
            match action.request().and_then(|r| cli::queue::run(config, &r)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        Command::CheckIp { ip, config } => match cli::queue::run(config, &format!("check-ip {ip}"))
        {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        Command::Route {
            address,
            from,
            auth,
            config,
        } => cli::route::run(
            &cli::route::Query {
                address,
                from,
                auth,
            },
            config,
        ),
        Command::Reload { config } => match cli::queue::run(config, "reload") {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        Command::Queue { action, config } => match cli::queue::run(config, &action.request()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
