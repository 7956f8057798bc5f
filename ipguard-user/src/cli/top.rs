//! `ipguard top`: a live terminal view of a running daemon (ratatui), like `htop` or
//! `cscli metrics`: packets per second per list, the top offenders and the recent bans.
//! [`TopView`] is the state (pure: rates from two samples and the time between them),
//! [`draw`] renders it, [`run`] polls the API. Off a terminal it prints one snapshot.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{self, IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use ratatui::{
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Row, Sparkline, Table},
    Frame,
};

use super::{clean, format_seconds, table, Call, Client, ClientError};
use crate::api::types::{OffenderList, OffenderView, Status};

/// Lists that pass and that drop, in the order shown.
/// `would_drop`: monitor mode's passed packets that enforce mode would drop (the sum of
/// the status's `would_drop_*` totals).
const PASS_LISTS: [&str; 4] = ["unlisted", "whitelist", "non_ip", "would_drop"];
const WOULD_DROP: [&str; 3] = [
    "would_drop_graylist",
    "would_drop_blacklist",
    "would_drop_rule",
];
const DROP_LISTS: [&str; 5] = ["graylist", "blacklist", "rule", "malformed", "syn_budget"];
/// Samples of history kept for the sparklines.
const HISTORY: usize = 120;

/// What the view shows, updated from each pair of samples.
#[derive(Default)]
pub struct TopView {
    pub status: Option<Status>,
    /// Packets per second per list over the last interval (empty after one sample).
    pub rates: BTreeMap<String, f64>,
    /// Passed and dropped packets per second, oldest first.
    pub pass_history: VecDeque<u64>,
    pub drop_history: VecDeque<u64>,
    pub offenders: Vec<OffenderView>,
    /// The last failure to reach the API, shown until the next success.
    pub error: Option<String>,
}

impl TopView {
    /// A new sample: `elapsed` since the previous one (`None` for the first).
    pub fn update(
        &mut self,
        status: Status,
        offenders: Vec<OffenderView>,
        elapsed: Option<Duration>,
    ) {
        if let (Some(prev), Some(dt)) = (&self.status, elapsed) {
            let secs = dt.as_secs_f64().max(1e-3);
            self.rates = status
                .lists
                .iter()
                .map(|(name, t)| {
                    let before = prev.lists.get(name).map_or(0, |p| p.packets);
                    // A restarted daemon's counters start again from zero.
                    (name.clone(), t.packets.saturating_sub(before) as f64 / secs)
                })
                .collect();
            let would: f64 = WOULD_DROP
                .iter()
                .map(|n| self.rates.get(*n).copied().unwrap_or(0.0))
                .sum();
            self.rates.insert("would_drop".to_owned(), would);
            let sum = |names: &[&str]| -> u64 {
                names
                    .iter()
                    .map(|n| self.rates.get(*n).copied().unwrap_or(0.0))
                    .sum::<f64>()
                    .round() as u64
            };
            push(&mut self.pass_history, sum(&PASS_LISTS));
            push(&mut self.drop_history, sum(&DROP_LISTS));
        }
        self.status = Some(status);
        self.offenders = offenders;
        self.error = None;
    }

    /// The offenders with a ban, the latest first.
    pub fn recent_bans(&self) -> Vec<&OffenderView> {
        let mut bans: Vec<&OffenderView> =
            self.offenders.iter().filter(|o| o.list.is_some()).collect();
        bans.sort_by(|a, b| b.last_activity.cmp(&a.last_activity));
        bans
    }

    fn rate(&self, list: &str) -> f64 {
        self.rates.get(list).copied().unwrap_or(0.0)
    }
}

fn push(history: &mut VecDeque<u64>, value: u64) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(value);
}

fn rate_text(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.1}k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
    }
}

/// The offenders as table rows: address, strikes, reports, ban, packets, dropped, reason.
fn offender_rows(offenders: &[OffenderView]) -> Vec<Vec<String>> {
    offenders
        .iter()
        .map(|o| {
            vec![
                clean(&o.ip),
                o.strikes.to_string(),
                o.reports.to_string(),
                o.list.as_deref().map_or("-".to_owned(), clean),
                o.counters.packets.to_string(),
                o.counters.dropped.to_string(),
                o.reason.as_deref().map_or("-".to_owned(), clean),
            ]
        })
        .collect()
}

const OFFENDER_HEADER: [&str; 7] = [
    "ADDRESS", "STRIKES", "REPORTS", "BAN", "PACKETS", "DROPPED", "REASON",
];

/// One frame of the live view.
pub fn draw(frame: &mut Frame, view: &TopView) {
    let [head, rates, offenders, bans] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(8),
        Constraint::Min(6),
        Constraint::Length(7),
    ])
    .areas(frame.area());
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let title = match (&view.status, &view.error) {
        (_, Some(e)) => Line::from(vec![
            Span::styled("ipguard top  ", bold),
            Span::styled(clean(e), Style::new().fg(Color::Red)),
        ]),
        (Some(s), None) => Line::from(vec![
            Span::styled("ipguard top  ", bold),
            Span::raw(format!(
                "{} ({}, {})  up {}  tracked {}  problems {}   q quits",
                clean(&s.interface),
                clean(&s.xdp_mode),
                clean(&s.mode),
                format_seconds(s.uptime_seconds),
                s.tracked_sources,
                s.problems.len()
            )),
        ]),
        (None, None) => Line::from(Span::styled("ipguard top  connecting...", bold)),
    };
    frame.render_widget(title, head);

    let [pass_area, drop_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(rates);
    for (area, lists, history, colour, name) in [
        (
            pass_area,
            &PASS_LISTS[..],
            &view.pass_history,
            Color::Green,
            "passed",
        ),
        (
            drop_area,
            &DROP_LISTS[..],
            &view.drop_history,
            Color::Red,
            "dropped",
        ),
    ] {
        let summary = lists
            .iter()
            .map(|l| format!("{l} {}", rate_text(view.rate(l))))
            .collect::<Vec<_>>()
            .join("  ");
        let data: Vec<u64> = history.iter().copied().collect();
        let block = Block::bordered().title(format!(
            " {name} {} ",
            rate_text(lists.iter().map(|l| view.rate(l)).sum())
        ));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let [line, spark] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
        frame.render_widget(Line::raw(summary), line);
        frame.render_widget(
            Sparkline::default()
                .data(&data)
                .style(Style::new().fg(colour)),
            spark,
        );
    }

    let widths = [
        Constraint::Length(39),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Min(10),
    ];
    let rows = offender_rows(&view.offenders).into_iter().map(|r| {
        let ban = match r[3].as_str() {
            "blacklist" => Style::new().fg(Color::Red),
            "graylist" => Style::new().fg(Color::Yellow),
            _ => Style::new(),
        };
        Row::new(r.into_iter().enumerate().map(|(i, c)| {
            if i == 3 {
                Cell::new(c).style(ban)
            } else {
                Cell::new(c)
            }
        }))
    });
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(OFFENDER_HEADER).style(bold))
            .block(Block::bordered().title(" top offenders ")),
        offenders,
    );
    let ban_rows = view.recent_bans().into_iter().take(5).map(|o| {
        Row::new([
            clean(&o.ip),
            o.list.as_deref().map_or("-".to_owned(), clean),
            o.expires.as_deref().map_or("never".to_owned(), clean),
            o.reason.as_deref().map_or("-".to_owned(), clean),
        ])
    });
    frame.render_widget(
        Table::new(
            ban_rows,
            [
                Constraint::Length(39),
                Constraint::Length(9),
                Constraint::Length(26),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(["ADDRESS", "BAN", "UNTIL", "REASON"]).style(bold))
        .block(Block::bordered().title(" recent bans ")),
        bans,
    );
}

/// The view as plain text (for a pipe, or `--json`-less scripts).
pub fn format_snapshot(view: &TopView) -> String {
    let mut out = String::new();
    if let Some(s) = &view.status {
        out.push_str(&format!(
            "{} ({}, {})  up {}  tracked {}  problems {}\n\n",
            clean(&s.interface),
            clean(&s.xdp_mode),
            clean(&s.mode),
            format_seconds(s.uptime_seconds),
            s.tracked_sources,
            s.problems.len()
        ));
    }
    let rows: Vec<Vec<String>> = PASS_LISTS
        .iter()
        .map(|l| (l, "pass"))
        .chain(DROP_LISTS.iter().map(|l| (l, "drop")))
        .map(|(l, v)| {
            let rate = if view.rates.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.1}", view.rate(l))
            };
            vec![(*l).to_owned(), v.to_owned(), rate]
        })
        .collect();
    out.push_str(&table(
        &["LIST", "VERDICT", "PACKETS/S"],
        &[false, false, true],
        &rows,
    ));
    out.push('\n');
    out.push_str(&table(
        &OFFENDER_HEADER,
        &[false, true, true, false, true, true, false],
        &offender_rows(&view.offenders),
    ));
    out
}

fn sample(client: &Client, limit: u32) -> Result<(Status, Vec<OffenderView>), ClientError> {
    let status: Status = client.fetch(&Call::status())?;
    let list: OffenderList = client.fetch(&Call::offenders(limit))?;
    Ok((status, list.offenders))
}

/// Runs the live view until q, Esc or Ctrl-C; off a terminal, prints one snapshot with
/// the rates over one interval.
pub fn run(client: &Client, interval: u64, limit: u32) -> Result<(), ClientError> {
    let interval = Duration::from_secs(interval);
    let mut view = TopView::default();
    if !io::stdout().is_terminal() {
        let (status, offenders) = sample(client, limit)?;
        view.update(status, offenders, None);
        let t = Instant::now();
        std::thread::sleep(interval);
        let (status, offenders) = sample(client, limit)?;
        view.update(status, offenders, Some(t.elapsed()));
        let mut out = io::stdout().lock();
        return match out.write_all(format_snapshot(&view).as_bytes()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(ClientError::Output),
        };
    }
    // Fails before the screen is taken over when the daemon is not there.
    let (status, offenders) = sample(client, limit)?;
    view.update(status, offenders, None);
    let mut last = Instant::now();
    let mut terminal = ratatui::init();
    let result = (|| -> io::Result<()> {
        use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
        loop {
            terminal.draw(|f| draw(f, &view))?;
            let deadline = last + interval;
            while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                if event::poll(wait)? {
                    if let Event::Key(k) = event::read()? {
                        let quit = k.kind == KeyEventKind::Press
                            && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                                || (k.code == KeyCode::Char('c')
                                    && k.modifiers.contains(KeyModifiers::CONTROL)));
                        if quit {
                            return Ok(());
                        }
                    }
                    terminal.draw(|f| draw(f, &view))?;
                }
            }
            let elapsed = last.elapsed();
            last = Instant::now();
            match sample(client, limit) {
                Ok((status, offenders)) => view.update(status, offenders, Some(elapsed)),
                // Shown in the title; the view keeps the last numbers and tries again.
                Err(e) => view.error = Some(e.to_string()),
            }
        }
    })();
    ratatui::restore();
    result.map_err(ClientError::Output)
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::api::types::{IpCounters, Traffic};

    fn status(unlisted: u64, blacklist: u64) -> Status {
        let t = |packets| Traffic { packets, bytes: 0 };
        Status {
            interface: "eth0".into(),
            xdp_mode: "native".into(),
            mode: "enforce".into(),
            uptime_seconds: 3700,
            entries: BTreeMap::new(),
            tracked_sources: 2,
            verdicts: BTreeMap::new(),
            lists: [
                ("unlisted".to_owned(), t(unlisted)),
                ("blacklist".to_owned(), t(blacklist)),
                ("would_drop_blacklist".to_owned(), t(blacklist / 5)),
                ("would_drop_rule".to_owned(), t(blacklist / 10)),
            ]
            .into(),
            maps: BTreeMap::new(),
            problems: vec![],
        }
    }

    fn offender(ip: &str, list: Option<&str>, at: &str) -> OffenderView {
        OffenderView {
            ip: ip.into(),
            strikes: 2,
            reports: 0,
            last_activity: at.into(),
            list: list.map(Into::into),
            prefix: None,
            reason: Some("syn rate\x1b[31m".into()),
            expires: None,
            counters: IpCounters {
                packets: 40,
                ..Default::default()
            },
        }
    }

    #[test]
    fn rates_come_from_two_samples_and_survive_a_counter_reset() {
        let mut v = TopView::default();
        v.update(status(100, 10), vec![], None);
        assert!(v.rates.is_empty());
        v.update(status(300, 50), vec![], Some(Duration::from_secs(2)));
        assert_eq!(v.rate("unlisted"), 100.0);
        assert_eq!(v.rate("blacklist"), 20.0);
        // Would-drops (monitor mode) pass: 4/s + 2/s.
        assert_eq!(v.rate("would_drop"), 6.0);
        assert_eq!(v.pass_history, [106]);
        assert_eq!(v.drop_history, [20]);
        // A restarted daemon: no negative rates.
        v.update(status(5, 0), vec![], Some(Duration::from_secs(1)));
        assert_eq!(v.rate("unlisted"), 0.0);
    }

    #[test]
    fn the_view_shows_rates_offenders_and_recent_bans_escaped() {
        let mut v = TopView::default();
        v.update(status(0, 0), vec![], None);
        let offenders = vec![
            offender("198.51.100.7", Some("graylist"), "2030-01-01T00:00:01Z"),
            offender("2001:db8::9", None, "2030-01-01T00:00:02Z"),
            offender("198.51.100.8", Some("blacklist"), "2030-01-01T00:00:03Z"),
        ];
        v.update(status(500, 250), offenders, Some(Duration::from_secs(1)));
        let mut terminal = Terminal::new(TestBackend::new(140, 30)).unwrap();
        terminal.draw(|f| draw(f, &v)).unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .chunks(140)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        for needle in [
            "eth0 (native, enforce)",
            "up 1h 1m",
            "dropped 250/s",
            "blacklist 250/s",
            // Monitor mode's would-drops are summed with the passed traffic.
            "would_drop 75/s",
            "passed 575/s",
            "top offenders",
            "2001:db8::9",
            "recent bans",
            // Control characters from a reason are shown escaped, never sent.
            "syn rate\\u{1b}[31m",
        ] {
            assert!(screen.contains(needle), "no {needle:?} in\n{screen}");
        }
        // Recent bans: the banned ones only, latest first.
        let bans = v.recent_bans();
        assert_eq!(
            bans.iter().map(|o| o.ip.as_str()).collect::<Vec<_>>(),
            ["198.51.100.8", "198.51.100.7"]
        );
        let text = format_snapshot(&v);
        assert!(
            text.lines().any(|l| l.starts_with("blacklist ")
                && l.contains(" drop ")
                && l.ends_with(" 250.0")),
            "{text}"
        );
        assert!(text.contains("198.51.100.8"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }
}
