//! Answers as text for people: tables, key/value blocks, one-line confirmations.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    api::types::{
        AddResponse, ClusterView, FeedList, IpStatus, ListPage, ModeView, ReloadResponse,
        RemoveResponse, ReportResponse, Status, Traffic,
    },
    model::ListKind,
};

pub(super) fn json_line(mut body: String) -> String {
    if !body.ends_with('\n') {
        body.push('\n');
    }
    body
}

// ---- Output formatting: pure functions of the API's answers. ----

/// Escapes control characters: reasons come from API callers and must not be able to
/// move the cursor or recolour an operator's terminal.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => clean(v),
        _ => "-".to_owned(),
    }
}

/// `key  value` lines, the values aligned.
pub(super) fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{key:<width$}  {value}");
    }
    out
}

/// A table with a header line; columns two spaces apart, numbers right-aligned, no
/// trailing spaces.
pub(crate) fn table(header: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths[i];
            if numeric.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `1d 2h`, `5m 3s`, `42s`: the largest unit and the next one when it is not zero.
pub fn format_seconds(seconds: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(i) = UNITS.iter().position(|(_, len)| seconds >= *len) else {
        return "0s".to_owned();
    };
    let (unit, len) = UNITS[i];
    let mut out = format!("{}{unit}", seconds / len);
    if let Some((next_unit, next_len)) = UNITS.get(i + 1) {
        let n = seconds % len / next_len;
        if n > 0 {
            let _ = write!(out, " {n}{next_unit}");
        }
    }
    out
}

pub(super) fn ip_status_rows(status: &IpStatus) -> Vec<(&'static str, String)> {
    let expires = match (&status.expires, status.retry_after) {
        (Some(at), Some(left)) => format!("{} (in {})", clean(at), format_seconds(left)),
        (Some(at), None) => clean(at),
        // Null means "never" only when an entry decides.
        (None, _) if status.list.is_some() || status.prefix.is_some() => "never".to_owned(),
        (None, _) => "-".to_owned(),
    };
    let c = &status.counters;
    let mut rows = vec![
        ("ip", clean(&status.ip)),
        (
            "verdict",
            if status.would_drop {
                format!("{} (would drop)", clean(&status.verdict))
            } else {
                clean(&status.verdict)
            },
        ),
        ("list", or_dash(status.list.as_deref())),
        ("prefix", or_dash(status.prefix.as_deref())),
        ("reason", or_dash(status.reason.as_deref())),
        (
            "source",
            match &status.node {
                Some(node) => format!(
                    "{} (node {})",
                    or_dash(status.source.as_deref()),
                    clean(node)
                ),
                None => or_dash(status.source.as_deref()),
            },
        ),
        ("strikes", status.strikes.to_string()),
        ("expires", expires),
        (
            "counters",
            format!(
                "packets {}, bytes {}, syns {}, dropped {}",
                c.packets, c.bytes, c.syns, c.dropped
            ),
        ),
    ];
    if let Some(country) = &status.country {
        rows.push(("country", clean(country)));
    }
    if let Some(asn) = status.asn {
        let org = status
            .asn_org
            .as_deref()
            .map_or(String::new(), |o| format!(" ({})", clean(o)));
        rows.push(("as", format!("AS{asn}{org}")));
    }
    if let Some(packet) = &status.packet {
        rows.insert(1, ("packet", clean(packet)));
    }
    // One row per scoped verdict: `tcp/22: drop (rule 2: deny 0.0.0.0/0 tcp/22)`.
    for v in &status.scoped {
        let mut text = format!("{}: {}", clean(&v.packets), clean(&v.verdict));
        if v.would_drop {
            text.push_str(" (would drop)");
        }
        if let Some(reason) = &v.reason {
            text.push_str(&format!(" ({})", clean(reason)));
        }
        rows.push(("scoped", text));
    }
    rows
}

/// `ipguard status IP`: one `key  value` line per field.
pub fn format_ip_status(status: &IpStatus) -> String {
    key_values(&ip_status_rows(status))
}

/// `ipguard report IP`: the outcome, then the address's new state.
pub fn format_report(report: &ReportResponse) -> String {
    let mut rows = vec![
        ("outcome", clean(&report.outcome)),
        (
            "reports",
            report
                .reports
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ),
    ];
    rows.extend(ip_status_rows(&report.status));
    key_values(&rows)
}

/// `ipguard list LIST`: a `NET  EXPIRES  SOURCE  REASON` table, with a note when more
/// pages follow.
pub fn format_list(page: &ListPage) -> String {
    if page.entries.is_empty() && page.next_cursor.is_none() {
        return "no entries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            vec![
                clean(&e.net),
                e.expires
                    .as_deref()
                    .map_or_else(|| "never".to_owned(), clean),
                or_dash(Some(&e.source)),
                or_dash(Some(&e.reason)),
            ]
        })
        .collect();
    let mut out = table(&["NET", "EXPIRES", "SOURCE", "REASON"], &[], &rows);
    if page.next_cursor.is_some() {
        out.push_str("(more entries: use --all to list them all)\n");
    }
    out
}

/// The entries of `map` in `order` first, then any others alphabetically.
pub(super) fn ordered<'a, V>(
    map: &'a BTreeMap<String, V>,
    order: &[&str],
) -> Vec<(&'a str, &'a V)> {
    let known = order
        .iter()
        .filter_map(|key| map.get_key_value(*key))
        .map(|(k, v)| (k.as_str(), v));
    let others = map
        .iter()
        .filter(|(k, _)| !order.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v));
    known.chain(others).collect()
}

/// `ipguard status`: the daemon in a few lines, then traffic and map tables.
pub fn format_status(status: &Status) -> String {
    let entries = ordered(
        &status.entries,
        &["whitelist", "graylist", "blacklist", "rules"],
    )
    .iter()
    .map(|(name, n)| format!("{} {n}", clean(name)))
    .collect::<Vec<_>>()
    .join(", ");
    let mut out = key_values(&[
        ("interface", clean(&status.interface)),
        ("xdp mode", clean(&status.xdp_mode)),
        ("mode", clean(&status.mode)),
        ("uptime", format_seconds(status.uptime_seconds)),
        ("tracked sources", status.tracked_sources.to_string()),
        (
            "entries",
            if entries.is_empty() {
                "-".to_owned()
            } else {
                entries
            },
        ),
    ]);
    let traffic_rows = |map: &BTreeMap<String, Traffic>, order: &[&str]| -> Vec<Vec<String>> {
        ordered(map, order)
            .into_iter()
            .map(|(name, t)| vec![clean(name), t.packets.to_string(), t.bytes.to_string()])
            .collect()
    };
    out.push('\n');
    out.push_str(&table(
        &["VERDICT", "PACKETS", "BYTES"],
        &[false, true, true],
        &traffic_rows(&status.verdicts, &["pass", "drop"]),
    ));
    out.push('\n');
    out.push_str(&table(
        &["LIST", "PACKETS", "BYTES"],
        &[false, true, true],
        &traffic_rows(
            &status.lists,
            &[
                "unlisted",
                "whitelist",
                "graylist",
                "blacklist",
                "rule",
                "non_ip",
                "malformed",
                "syn_budget",
                "would_drop_graylist",
                "would_drop_blacklist",
                "would_drop_rule",
            ],
        ),
    ));
    out.push('\n');
    let maps: Vec<Vec<String>> = ordered(&status.maps, &["lpm_v4", "lpm_v6", "sources"])
        .into_iter()
        .map(|(name, m)| {
            let fill = if m.capacity == 0 {
                "-".to_owned()
            } else {
                // Tenths of a percent, rounded down so a full map is the only 100.0%.
                let permille = u128::from(m.used) * 1000 / u128::from(m.capacity);
                format!("{}.{}%", permille / 10, permille % 10)
            };
            vec![
                clean(name),
                m.used.to_string(),
                m.capacity.to_string(),
                fill,
            ]
        })
        .collect();
    out.push_str(&table(
        &["MAP", "USED", "CAPACITY", "FILL"],
        &[false, true, true, true],
        &maps,
    ));
    out
}

/// `ipguard add`: how many entries were new and how many replaced one.
pub fn format_add(list: ListKind, answer: &AddResponse) -> String {
    format!(
        "{list}: added {}, replaced {}\n",
        answer.added, answer.replaced
    )
}

/// `ipguard feeds`: one block per feed.
pub fn format_feeds(list: &FeedList) -> String {
    if list.feeds.is_empty() {
        return "no feeds (no [[feed]] in the config)\n".to_owned();
    }
    let mut out = String::new();
    for (i, f) in list.feeds.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let dropped = if f.dropped.is_empty() {
            "0".to_owned()
        } else {
            f.dropped
                .iter()
                .map(|(k, v)| format!("{} {v}", clean(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut rows = vec![
            ("feed", clean(&f.name)),
            ("list", clean(&f.list)),
            (
                "source",
                format!("{} ({})", clean(&f.source), clean(&f.format)),
            ),
            ("entries", f.entries.to_string()),
            ("last fetch", or_dash(f.last_fetch.as_deref())),
            ("last change", or_dash(f.last_change.as_deref())),
            ("next fetch", clean(&f.next_fetch)),
            ("fetches", format!("{} ({} failed)", f.fetches, f.failures)),
            ("rejected lines", f.rejected_lines.to_string()),
            ("dropped", dropped),
        ];
        if let Some(e) = &f.last_error {
            rows.push(("last error", clean(e)));
        }
        if let Some(h) = &f.held {
            rows.push((
                "held",
                format!(
                    "{} (+{} -{}, since {}); ipguard feed accept {}",
                    clean(&h.reason),
                    h.added,
                    h.removed,
                    clean(&h.since),
                    clean(&f.name)
                ),
            ));
        }
        out.push_str(&key_values(&rows));
    }
    out
}

/// `ipguard reload`: applied, and what still needs a restart.
pub fn format_reload(answer: &ReloadResponse) -> String {
    if answer.restart_needed.is_empty() {
        "reloaded\n".to_owned()
    } else {
        let keys: Vec<String> = answer.restart_needed.iter().map(|k| clean(k)).collect();
        format!(
            "reloaded; these changed settings take effect only after a restart: {}\n",
            keys.join(", ")
        )
    }
}

/// `ipguard mode`: the mode in force, and the config file's when they differ.
pub fn format_mode(answer: &ModeView) -> String {
    let mode = clean(&answer.mode);
    if answer.config_mode == answer.mode {
        format!("mode  {mode}\n")
    } else {
        format!(
            "mode  {mode}\n(the config file says {}: a restart, or a reload that finds its mode changed, applies it)\n",
            clean(&answer.config_mode)
        )
    }
}

/// `ipguard remove`: the entry that is gone.
pub fn format_remove(list: ListKind, answer: &RemoveResponse) -> String {
    format!("{list}: removed {}\n", clean(&answer.removed))
}

/// `ipguard cluster`: the fleet link and what it shared.
pub fn format_cluster(c: &ClusterView) -> String {
    if !c.enabled {
        return "not in a fleet (no [cluster] in the config)\n".to_owned();
    }
    let mut rows = vec![
        ("node", or_dash(c.node.as_deref())),
        (
            "link",
            format!("{} since {}", clean(&c.link), or_dash(c.since.as_deref())),
        ),
    ];
    if let Some(e) = &c.last_error {
        rows.push(("last error", clean(e)));
    }
    rows.extend([
        ("shared decisions", c.shared.to_string()),
        ("queued", c.queued.to_string()),
        (
            "last lag",
            c.last_lag_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
        ),
        (
            "last resync",
            match (c.last_resync_ms, c.last_resync_decisions) {
                (Some(ms), Some(n)) => format!("{n} decisions in {ms} ms ({} resyncs)", c.resyncs),
                _ => "-".to_owned(),
            },
        ),
        (
            "published/applied",
            format!("{} / {}", c.published, c.applied),
        ),
        (
            "rejected/skipped",
            format!("{} / {}", c.rejected, c.skipped),
        ),
        ("removed", c.removed.to_string()),
    ]);
    let mut out = key_values(&rows);
    let nodes: Vec<Vec<String>> = c
        .nodes
        .iter()
        .map(|n| vec![clean(&n.name), clean(&n.last_seen)])
        .collect();
    if !nodes.is_empty() {
        out.push('\n');
        out.push_str(&table(&["NODE", "LAST SEEN"], &[], &nodes));
    }
    out
}

/// Colours for a terminal: table headers bold, and the value of the keys that carry a
/// verdict (`verdict`, `list`, `link`, `outcome`) red, yellow or green by what it says.
/// Applied to the plain text the `format_*` functions make (reasons were already
/// cleaned of control characters), so piped output and `--json` never carry escapes;
/// the writer (`anstream`) strips them again when stdout is not a terminal or
/// `NO_COLOR` is set.
pub fn highlight(text: &str) -> String {
    use anstyle::{AnsiColor, Style};
    let bold = Style::new().bold();
    let paint = |word: &str| -> Option<Style> {
        let colour = match word {
            "drop" | "down" | "blacklist" | "banned" | "already_banned" => AnsiColor::Red,
            "graylist" | "recorded" | "monitor" | "pass (would drop)" => AnsiColor::Yellow,
            "pass" | "up" | "whitelist" | "whitelisted" => AnsiColor::Green,
            _ => return None,
        };
        Some(Style::new().fg_color(Some(colour.into())).bold())
    };
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let header = body.split("  ").filter(|w| !w.is_empty()).count() >= 2
            && body
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == ' ' || c == '_');
        if header {
            let _ = write!(out, "{bold}{body}{bold:#}");
        } else if let Some((key, rest)) = body
            .split_once("  ")
            .filter(|(k, _)| matches!(k.trim(), "verdict" | "list" | "link" | "outcome" | "mode"))
        {
            let value = rest.trim_start();
            let pad = &rest[..rest.len() - value.len()];
            match paint(value) {
                Some(style) => {
                    let _ = write!(out, "{key}  {pad}{style}{value}{style:#}");
                }
                None => out.push_str(body),
            }
        } else {
            out.push_str(body);
        }
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}
