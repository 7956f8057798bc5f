//! The manual pages, generated from the sources of truth: `ipguard(8)` and one page per
//! subcommand from the clap definitions (`clap_mangen`), `ipguard.toml(5)` from the
//! documented example config, and shell completions (`clap_complete`). The package build
//! (`cargo xtask package`) writes them with `ipguard manpages DIR`.

use std::{io, path::Path};

use roff::{bold, italic, roman, Roff};

/// The documented example config, the text `ipguard.toml(5)` is made of.
pub const EXAMPLE_CONFIG: &str = include_str!("../../ipguard.example.toml");

/// What `ipguard(8)` adds to what clap knows: exit codes, files, environment.
fn extra_sections(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        ("0", "Success."),
        (
            "1",
            "An error: the config is invalid, the daemon cannot start, or the API answered \
             with an error or cannot be reached (one line on stderr says which).",
        ),
        (
            "2",
            "A usage error: an unknown option, or an argument (list, address, network, \
             duration) that is not valid; nothing was sent.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(what)]);
    }
    roff.control("SH", ["FILES"]);
    for (file, what) in [
        (
            "/etc/ipguard/ipguard.toml",
            "The config; see ipguard.toml(5).",
        ),
        (
            "/etc/ipguard/api-token",
            "The API's bearer token (mode 0600).",
        ),
        (
            "/var/lib/ipguard",
            "State that survives a restart (state.dir).",
        ),
        (
            "/sys/fs/bpf/ipguard",
            "The pinned XDP program, link and maps (state.pin_dir).",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(file)])
            .text([roman(what)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, what) in [
        ("IPGUARD_API", "The API's base URL for the client commands."),
        (
            "IPGUARD_TOKEN",
            "The API token itself, when no --token-file is given.",
        ),
        ("RUST_LOG", "The daemon's log filter (default: info)."),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "Set by systemd: the daemon reports READY, RELOADING, STOPPING and pings the watchdog.",
        ),
    ] {
        roff.control("TP", []).text([bold(var)]).text([roman(what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("ipguard.toml(5), systemctl(1), xdp-loader(8)")]);
}

/// Writes `ipguard.8`, `ipguard-<subcommand>.8` for each visible subcommand, and
/// `ipguard.toml.5` into `dir`.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<String>> {
    let mut cmd = cmd;
    cmd.build();
    let mut written = Vec::new();
    let mut write = |name: String, body: Vec<u8>| -> io::Result<()> {
        std::fs::write(dir.join(&name), body)?;
        written.push(name);
        Ok(())
    };
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    let mut extra = Roff::new();
    extra_sections(&mut extra);
    extra.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    write("ipguard.8".into(), page)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("ipguard-{}", sub.get_name());
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("ipguard {}", sub.get_name()));
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).section("8").render(&mut page)?;
        write(format!("{name}.8"), page)?;
    }
    write(
        "ipguard.toml.5".into(),
        config_page(EXAMPLE_CONFIG).into_bytes(),
    )?;
    Ok(written)
}

/// `ipguard.toml(5)` from the example config: its sections become sections, each key a
/// tagged paragraph with its comment and default, the comments between keys paragraphs.
pub fn config_page(example: &str) -> String {
    let mut roff = Roff::new();
    roff.control("TH", ["IPGUARD.TOML", "5"]);
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "ipguard.toml - configuration of the ipguard XDP IP filter",
    )]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "The config is TOML. Every key is optional; the values shown are the defaults. \
         `ipguard check-config FILE` validates a file and names the file, line and column \
         of any error. What follows is the annotated example config.",
    )]);
    let mut comment: Vec<String> = Vec::new();
    let flush = |roff: &mut Roff, comment: &mut Vec<String>| {
        if !comment.is_empty() {
            roff.control("PP", []).text(prose(comment));
            comment.clear();
        }
    };
    for line in example.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            let c = c.trim();
            // A commented-out section: a section of its own, off by default.
            if c.starts_with('[') && c.ends_with(']') && !c.contains(' ') {
                flush(&mut roff, &mut comment);
                let title = format!("{} (not set by default)", c.to_uppercase());
                roff.control("SH", [title.as_str()]);
            // A commented-out key: shown as an example of the key, not as prose.
            } else if looks_like_key(c) {
                flush(&mut roff, &mut comment);
                roff.control("TP", [])
                    .text([italic(c.to_owned())])
                    .text([roman("(example; not set by default)")]);
            } else if !c.is_empty() {
                comment.push(c.to_owned());
            }
        } else if t.starts_with('[') {
            flush(&mut roff, &mut comment);
            roff.control("SH", [t.to_uppercase().as_str()]);
        } else if t.is_empty() {
            flush(&mut roff, &mut comment);
        } else {
            let what = prose(&comment);
            comment.clear();
            roff.control("TP", []).text([bold(t.to_owned())]).text(what);
        }
    }
    flush(&mut roff, &mut comment);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("ipguard(8)")]);
    roff.to_roff()
}

/// Comment lines as running text, with a line break before each item of a list in them
/// (`- ...`, or `name - ...` as in "auto   - native mode").
fn prose(lines: &[String]) -> Vec<roff::Inline> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let item = line.starts_with("- ")
            || line
                .split_once(" - ")
                .is_some_and(|(head, _)| !head.trim().contains(' '));
        if i > 0 {
            out.push(if item { roff::line_break() } else { roman(" ") });
        }
        out.push(roman(line.clone()));
    }
    out
}

/// `key = value` (or `[section]`) in a comment.
fn looks_like_key(c: &str) -> bool {
    let Some((key, _)) = c.split_once(" = ") else {
        return c.starts_with('[') && c.ends_with(']') && !c.contains(' ');
    };
    !key.is_empty()
        && key
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.')
}

/// The completion script for `shell`, for the command `cmd`.
pub fn completions(cmd: clap::Command, shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = cmd;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ipguard", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_page_has_every_section_and_key_of_the_example() {
        let page = config_page(EXAMPLE_CONFIG);
        assert!(page.starts_with(".TH IPGUARD.TOML 5"), "{}", &page[..80]);
        for line in EXAMPLE_CONFIG.lines() {
            let t = line.trim();
            let commented_section = t
                .strip_prefix("# ")
                .is_some_and(|c| c.starts_with('[') && c.ends_with(']') && !c.contains(' '));
            if t.starts_with('[') || commented_section {
                let t = t.trim_start_matches("# ");
                let title = t.to_uppercase();
                assert!(
                    page.lines()
                        .any(|l| l.starts_with(".SH") && l.contains(&title)),
                    "{t}"
                );
            } else if let Some((key, _)) = t.split_once(" = ").filter(|_| !t.starts_with('#')) {
                assert!(page.contains(&format!("\\fB{key}")), "{key}");
            }
        }
        assert!(page.contains("format = \\(dqtext\\(dq") || page.contains("format = \"text\""));
    }

    #[test]
    fn comments_with_keys_are_examples_not_prose() {
        assert!(looks_like_key("token_file = \"/etc/ipguard/api-token\""));
        assert!(looks_like_key("[cluster]"));
        assert!(!looks_like_key("Default: 100 (at most 1000)."));
        assert!(!looks_like_key("a b = c"));
    }
}
