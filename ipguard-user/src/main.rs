//! `ipguard`: command-line entry point. Wiring only; the work is in the library.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ipguard::{cli, config::Config, daemon, policy::compile::compile};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ipguard",
    version,
    about = "XDP IP filter: whitelist, graylist and blacklist at packet level"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP filter on an interface and enforce the lists until SIGINT/SIGTERM.
    Run {
        /// Config file (TOML); see ipguard.example.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Interface to filter; overrides `interface` in the config.
        #[arg(long, short)]
        interface: Option<String>,
        /// At SIGTERM/SIGINT, leave the XDP program attached with its lists, for the next
        /// start to adopt without an unfiltered moment (a restart, an upgrade).
        #[arg(long)]
        keep_attached: bool,
    },
    /// Validate a config file without loading anything.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// status, list, add, remove, report: clients of a running daemon's REST API.
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            interface,
            keep_attached,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(daemon::run(
                    &config,
                    daemon::RunOptions {
                        interface,
                        keep_attached,
                    },
                ))
            }),
        Command::CheckConfig { file } => check_config(&file),
        Command::Client(command) => cli::run(&command).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ipguard: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything `run` would refuse before it loads anything.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::from_file(file)?;
    daemon::check_api(&config)?;
    daemon::check_cluster(&config)?;
    let compiled = compile(&config.lists);
    println!(
        "{}: ok (interface {}, xdp_mode {}; whitelist {}, graylist {}, blacklist {} entries; {} compiled prefixes)",
        file.display(),
        config.interface.as_deref().unwrap_or("<from --interface>"),
        config.xdp_mode,
        config.lists.whitelist.len(),
        config.lists.graylist.len(),
        config.lists.blacklist.len(),
        compiled.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
