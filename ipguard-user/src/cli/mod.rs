//! The REST API's command-line client: `ipguard status|list|add|remove|report|mode`.
//!
//! Three layers, each testable alone: [`Call`] builds a request (method, path, JSON body)
//! from validated arguments, [`Client`] sends it and turns failures into one-line
//! [`ClientError`]s (`client.rs`), and the `format_*` functions turn answers into text
//! (`format.rs`).
//!
//! Arguments are validated by clap before anything is sent (list names, addresses and
//! networks with [`crate::net::parse_net`], durations with [`crate::duration`]), so a
//! typo is a usage error (exit 2) and never a request.

use std::{
    io::{self, Write as _},
    net::IpAddr,
    path::PathBuf,
};

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use ipnet::IpNet;

mod client;
mod format;
pub mod top;

pub use self::{client::*, format::*};
use crate::{
    api::types::{
        AddEntry, AddRequest, AddResponse, ClusterView, FeedList, FeedView, IpStatus, ListPage,
        ModeView, OffenderList, ReloadResponse, RemoveResponse, ReportRequest, ReportResponse,
        Status, MAX_PAGE,
    },
    duration::{parse_lifetime, DurationError},
    model::{ListKind, Mode, Proto},
};

/// Where the CLI looks for the API unless told otherwise (the daemon's default `[api] listen`).
pub const DEFAULT_API: &str = "http://127.0.0.1:9180";
/// Environment variable naming the API's base URL.
pub const API_ENV: &str = "IPGUARD_API";
/// Environment variable holding the API token itself (not a file name).
pub const TOKEN_ENV: &str = "IPGUARD_TOKEN";
/// Page size of `list --all` without `--limit`: few round trips, modest answers.
const ALL_PAGE_SIZE: u32 = 1_000;

/// Options every client command takes: where the API is, how to authenticate, how to print.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ApiOpts {
    /// Base URL of the daemon's REST API (plain http://; a bare HOST:PORT means http://HOST:PORT).
    #[arg(long, value_name = "URL", env = API_ENV, default_value = DEFAULT_API, value_parser = parse_api_url)]
    pub api: String,
    /// File holding the API token (the daemon's `[api] token_file`). Without it, the
    /// environment variable IPGUARD_TOKEN may hold the token itself.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON answer as is (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The client subcommands of `ipguard` (flattened into its command list by `main.rs`).
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum ClientCommand {
    /// Show the daemon's status, or explain what it does with one address and why.
    Status {
        /// Address to explain (IPv4 or IPv6); without it, the daemon's overall status.
        ip: Option<IpAddr>,
        /// With IP: explain one packet of this protocol (tcp, udp, icmp), as port- and
        /// protocol-scoped rules decide it.
        #[arg(long, requires = "ip", value_parser = proto_parser())]
        proto: Option<Proto>,
        /// With --proto tcp or udp: the packet's destination port.
        #[arg(long, requires = "proto", value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Show the entries of a list.
    List {
        /// Which list.
        #[arg(value_name = "LIST", value_parser = list_parser())]
        list: ListKind,
        /// Entries per page (1-10000; the API's default is 100). With --all, the page size
        /// of each request (default 1000).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE as i64))]
        limit: Option<u32>,
        /// Follow the pages to the end and show every entry.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Add addresses or networks to a list: all of them, or none.
    Add {
        /// Which list.
        #[arg(value_name = "LIST", value_parser = list_parser())]
        list: ListKind,
        /// Address or network in CIDR form (host bits clear); several are added together.
        #[arg(value_name = "NET", required = true, value_parser = crate::net::parse_net)]
        nets: Vec<IpNet>,
        /// How long the entries last: 90s, 15m, 2h, 30d or forever (the default).
        #[arg(long, value_name = "D", value_parser = parse_duration_arg)]
        duration: Option<String>,
        /// Why, shown by `status IP` and `list`.
        #[arg(long, value_name = "R")]
        reason: Option<String>,
        /// Allow an entry that covers your own address or loopback.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Remove an address or network from a list.
    Remove {
        /// Which list.
        #[arg(value_name = "LIST", value_parser = list_parser())]
        list: ListKind,
        /// The entry, as listed (a bare address means /32 or /128).
        #[arg(value_name = "NET", value_parser = crate::net::parse_net)]
        net: IpNet,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Show the fleet link (`[cluster]`): its state, the nodes seen, what was shared.
    Cluster {
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Show the blocklist feeds (`[[feed]]`): entries, fetches, rejects, held updates.
    Feeds {
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Act on one feed: `ipguard feed accept NAME` applies the update it holds back.
    Feed {
        #[command(subcommand)]
        action: FeedAction,
    },
    /// Re-read the config file and apply all of it, or nothing (like SIGHUP); says which
    /// changed settings need a restart.
    Reload {
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Show the mode, or switch it now: in monitor mode lists and deny rules drop nothing,
    /// and what they would drop passes and is counted (would drop). Holds until a restart,
    /// or a reload that finds the config's `mode` changed.
    Mode {
        /// The mode to switch to; without it, the mode in force.
        #[arg(value_name = "MODE", value_parser = mode_parser())]
        mode: Option<Mode>,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// A live view of the daemon, like top: rates per list, top offenders, recent bans
    /// (q or Esc quits). When stdout is not a terminal, one snapshot in text, then exit.
    Top {
        /// Seconds between updates (1-60).
        #[arg(long, value_name = "S", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=60))]
        interval: u64,
        /// Offenders to show (1-100).
        #[arg(long, value_name = "N", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Report an abusive address; enough reports within the window ban it.
    Report {
        /// The address to report (IPv4 or IPv6).
        ip: IpAddr,
        /// Why, e.g. "ssh brute force".
        #[arg(long, value_name = "R")]
        reason: Option<String>,
        #[command(flatten)]
        api: ApiOpts,
    },
}

/// What `ipguard feed` does.
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum FeedAction {
    /// Apply the update the feed holds back (it changed too much, or emptied): look at
    /// `ipguard feeds` first.
    Accept {
        /// The feed's name.
        name: String,
        #[command(flatten)]
        api: ApiOpts,
    },
}

impl ClientCommand {
    /// The options common to all commands.
    pub fn api_opts(&self) -> &ApiOpts {
        match self {
            ClientCommand::Status { api, .. }
            | ClientCommand::List { api, .. }
            | ClientCommand::Add { api, .. }
            | ClientCommand::Remove { api, .. }
            | ClientCommand::Report { api, .. }
            | ClientCommand::Top { api, .. }
            | ClientCommand::Reload { api }
            | ClientCommand::Feeds { api }
            | ClientCommand::Feed {
                action: FeedAction::Accept { api, .. },
            }
            | ClientCommand::Mode { api, .. }
            | ClientCommand::Cluster { api } => api,
        }
    }
}

fn list_parser() -> impl clap::builder::TypedValueParser<Value = ListKind> {
    PossibleValuesParser::new(ListKind::ALL.map(ListKind::as_str))
        .try_map(|name| name.parse::<ListKind>())
}

fn proto_parser() -> impl clap::builder::TypedValueParser<Value = Proto> {
    PossibleValuesParser::new(Proto::ALL.map(Proto::as_str)).try_map(|name| name.parse::<Proto>())
}

fn mode_parser() -> impl clap::builder::TypedValueParser<Value = Mode> {
    PossibleValuesParser::new(Mode::ALL.map(Mode::as_str)).try_map(|name| name.parse::<Mode>())
}

fn parse_duration_arg(s: &str) -> Result<String, DurationError> {
    parse_lifetime(s)?;
    // Sent as written: the daemon parses it with the same function.
    Ok(s.to_owned())
}

/// Runs a client command against the API its options name and prints the answer.
pub fn run(command: &ClientCommand) -> Result<(), ClientError> {
    let opts = command.api_opts();
    let token = resolve_token(opts.token_file.as_deref(), std::env::var_os(TOKEN_ENV))?;
    let client = Client::new(&opts.api, token);
    if let ClientCommand::Top {
        interval, limit, ..
    } = command
    {
        return top::run(&client, *interval, *limit);
    }
    let output = execute(command, &client)?;
    let output = if opts.json {
        output
    } else {
        highlight(&output)
    };
    // Colour on a terminal only (and not with NO_COLOR): anstream strips it otherwise.
    let mut stdout = anstream::AutoStream::auto(io::stdout().lock());
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `ipguard list --all | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(ClientError::Output),
    }
}

/// Performs a client command through `client`; the text to print (ending in a newline).
pub fn execute(command: &ClientCommand, client: &Client) -> Result<String, ClientError> {
    let json = command.api_opts().json;
    match command {
        ClientCommand::Status {
            ip, proto, port, ..
        } => {
            let call = match ip {
                Some(ip) => Call::ip_packet(*ip, *proto, *port),
                None => Call::status(),
            };
            if json {
                Ok(json_line(client.send(&call)?))
            } else if ip.is_some() {
                Ok(format_ip_status(&client.fetch::<IpStatus>(&call)?))
            } else {
                Ok(format_status(&client.fetch::<Status>(&call)?))
            }
        }
        ClientCommand::List {
            list, limit, all, ..
        } => {
            if !*all {
                let call = Call::list(*list, *limit, None);
                return if json {
                    Ok(json_line(client.send(&call)?))
                } else {
                    Ok(format_list(&client.fetch::<ListPage>(&call)?))
                };
            }
            let page = fetch_all(client, *list, limit.unwrap_or(ALL_PAGE_SIZE))?;
            if json {
                Ok(json_line(serde_json::to_string(&page)?))
            } else {
                Ok(format_list(&page))
            }
        }
        ClientCommand::Add {
            list,
            nets,
            duration,
            reason,
            force,
            ..
        } => {
            let request = AddRequest {
                entries: nets
                    .iter()
                    .map(|net| AddEntry {
                        net: net.to_string(),
                        duration: duration.clone(),
                        reason: reason.clone(),
                    })
                    .collect(),
                force: *force,
            };
            let call = Call::add(*list, &request)?;
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_add(*list, &client.fetch::<AddResponse>(&call)?))
            }
        }
        ClientCommand::Remove { list, net, .. } => {
            let call = Call::remove(*list, net);
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_remove(
                    *list,
                    &client.fetch::<RemoveResponse>(&call)?,
                ))
            }
        }
        ClientCommand::Cluster { .. } => {
            let call = Call::get("/v1/cluster".to_owned());
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_cluster(&client.fetch::<ClusterView>(&call)?))
            }
        }
        ClientCommand::Feeds { .. } => {
            let call = Call::get("/v1/feeds".to_owned());
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_feeds(&client.fetch::<FeedList>(&call)?))
            }
        }
        ClientCommand::Feed {
            action: FeedAction::Accept { name, .. },
        } => {
            let call = Call::feed_accept(name);
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                let f: FeedView = client.fetch(&call)?;
                Ok(format!(
                    "{}: update applied, {} entries in force\n",
                    clean(&f.name),
                    f.entries
                ))
            }
        }
        ClientCommand::Reload { .. } => {
            let call = Call::reload();
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_reload(&client.fetch::<ReloadResponse>(&call)?))
            }
        }
        ClientCommand::Mode { mode, .. } => {
            let call = Call::mode(*mode)?;
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_mode(&client.fetch::<ModeView>(&call)?))
            }
        }
        ClientCommand::Top { limit, .. } => {
            // One snapshot without rates (`run` drives the live view).
            let status: Status = client.fetch(&Call::status())?;
            let offenders: OffenderList = client.fetch(&Call::offenders(*limit))?;
            if json {
                Ok(json_line(serde_json::to_string(&serde_json::json!({
                    "status": status,
                    "offenders": offenders.offenders,
                }))?))
            } else {
                let mut view = top::TopView::default();
                view.update(status, offenders.offenders, None);
                Ok(top::format_snapshot(&view))
            }
        }
        ClientCommand::Report { ip, reason, .. } => {
            let call = Call::report(&ReportRequest {
                ip: ip.to_string(),
                reason: reason.clone(),
            })?;
            if json {
                Ok(json_line(client.send(&call)?))
            } else {
                Ok(format_report(&client.fetch::<ReportResponse>(&call)?))
            }
        }
    }
}

/// Follows `next_cursor` to the last page; all entries as one page without a cursor.
fn fetch_all(client: &Client, list: ListKind, page_size: u32) -> Result<ListPage, ClientError> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page: ListPage = client.fetch(&Call::list(list, Some(page_size), cursor.as_deref()))?;
        entries.extend(page.entries);
        match page.next_cursor {
            None => break,
            Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                return Err(ClientError::CursorLoop(next))
            }
            Some(next) => cursor = Some(next),
        }
    }
    Ok(ListPage {
        entries,
        next_cursor: None,
    })
}

#[cfg(test)]
mod tests;
