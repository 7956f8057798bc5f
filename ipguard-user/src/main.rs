//! `ipguard`: command-line entry point. Wiring only; the work is in the library.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{CommandFactory as _, Parser, Subcommand};
use ipguard::{
    cli,
    config::{Config, LogFormat},
    daemon,
    policy::compile::compile,
};
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
        /// The daemon's log on stderr: `text` (one line per event) or `json` (one object
        /// per line); overrides `[log] format`.
        #[arg(long, value_name = "FORMAT", value_parser = log_format_parser())]
        log_format: Option<LogFormat>,
    },
    /// Validate a config file without loading anything.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (ipguard.8, ipguard-<command>.8, ipguard.toml.5) into DIR.
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    /// status, list, add, remove, report: clients of a running daemon's REST API.
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn log_format_parser() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(LogFormat::ALL.map(LogFormat::as_str))
        .try_map(|s| s.parse::<LogFormat>())
}

/// Whether stderr is the systemd journal's stream (`JOURNAL_STREAM` names its device and
/// inode): the journal stamps every line itself, so the log adds no time of its own.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The daemon's own log on stderr, in the format asked for: the same events and fields
/// either way.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match (format, journal) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        (LogFormat::Text, true) => builder.with_ansi(false).without_time().init(),
        (LogFormat::Text, false) => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Run {
            log_format: Some(f),
            ..
        } => *f,
        Command::Run { config, .. } => Config::peek_log_format(config).unwrap_or_default(),
        _ => LogFormat::default(),
    };
    init_logging(format);
    let result = match cli.command {
        Command::Run {
            config,
            interface,
            keep_attached,
            log_format: _,
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
        Command::Completions { shell } => {
            use std::io::Write as _;
            let script = ipguard::manual::completions(Cli::command(), shell);
            std::io::stdout()
                .write_all(&script)
                .map_err(anyhow::Error::from)
        }
        Command::Manpages { dir } => ipguard::manual::write_man_pages(Cli::command(), &dir)
            .map(|pages| println!("{}", pages.join(" ")))
            .map_err(|e| anyhow::anyhow!("writing the manual pages into {}: {e}", dir.display())),
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
    let base = Config::from_file(file)?;
    daemon::check_api(&base)?;
    daemon::check_cluster(&base)?;
    // Opens the geo databases and compiles their prefixes, as a start would.
    let (config, geo) = daemon::compile_geo(&base)?;
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
    let (gray, black) = (
        config.lists.monitor_graylist.len(),
        config.lists.monitor_blacklist.len(),
    );
    if config.mode == ipguard::model::Mode::Monitor || gray + black > 0 {
        println!(
            "mode {}; monitored (passed, counted as would drop): graylist {gray}, blacklist {black} entries",
            config.mode
        );
    }
    if let Some(geo) = geo {
        println!(
            "geo: {} prefixes on the {}{}",
            geo.nets.len(),
            geo.list,
            if geo.unmatched.is_empty() {
                String::new()
            } else {
                format!(" (not in the databases: {})", geo.unmatched.join(", "))
            }
        );
    }
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
