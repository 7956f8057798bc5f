//! T2: the REST API of a running daemon under generated and hostile input: schemathesis
//! (PyPI, installed by `cargo xtask setup`) against `openapi.yaml`, with and without the
//! token; huge, deep and invalid bodies; idle connections; many concurrent writers.
//! No answer may be a 5xx or outside the schema. Needs root, IPGUARD_BIN and
//! IPGUARD_SCHEMATHESIS.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use ipguard_tests::{
    daemon::{http_get, testbed, Daemon},
    netns::{in_netns, Testbed},
};

const TOKEN: &str = "fuzz-token-0123456789abcdef";

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("IPGUARD_SCHEMATHESIS").expect(
        "IPGUARD_SCHEMATHESIS is not set: run the privileged tests through `cargo xtask test`, \
         which installs schemathesis and points IPGUARD_SCHEMATHESIS at it",
    );
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

fn openapi() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml")
}

fn start(bed: &Testbed, dir: &std::path::Path) -> Daemon {
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // A feed named as tests/schemathesis.toml names it, so that accepting one reaches the
    // feed task (409: nothing held) instead of a 404.
    let feed = dir.join("fuzz.netset");
    std::fs::write(&feed, "198.51.100.200\n").unwrap();
    let config = format!(
        "[lists]\nwhitelist = [\"127.0.0.0/8\", \"::1\"]\nblacklist = [\"203.0.113.0/24\"]\n[maps]\nsources_capacity = 4096\n[report]\ncount = 3\n[api]\ntoken_file = \"{}\"\n[[feed]]\nname = \"fuzz\"\npath = \"{}\"\n",
        token.display(),
        feed.display()
    );
    let d = Daemon::start(bed, dir, &config);
    d.wait_log(&["ipguard is filtering"], Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{}", d.log()));
    d
}

/// Runs schemathesis from the server namespace; returns the number of test cases.
fn fuzz(bed: &Testbed, dir: &std::path::Path, token: Option<&str>, examples: u32) -> u64 {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", bed.srv))
        .arg(schemathesis())
        .arg("--config-file")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml"))
        .arg("run")
        .arg(openapi())
        .args(["--url", "http://127.0.0.1:9180"])
        .args(["--checks", "all"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", "1", "--generation-database", "none", "--no-color"])
        .args(["--workers", "1", "--request-timeout", "10"])
        .env("HOME", dir)
        .current_dir(dir);
    if let Some(t) = token {
        cmd.args(["--header", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    // The server and the spec agree: with the token no warning at all (a "schema
    // validation mismatch" would mean the server is stricter than the spec); without it
    // only the expected one, that authentication fails.
    if let Some(warnings) = text.split("WARNINGS").nth(1) {
        let warnings = warnings.split("SUMMARY").next().unwrap_or_default();
        assert!(
            token.is_none()
                && warnings
                    .trim_matches(['=', ' ', '\n'])
                    .starts_with("Authentication failed"),
            "schemathesis warns:\n{text}"
        );
    }
    // The summary line: "Test cases:\n  924 generated, 924 passed, 14 skipped".
    let cases: u64 = text
        .split_once("Test cases:")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no test case count in:\n{text}"));
    assert!(cases > 0, "no test case ran:\n{text}");
    cases
}

#[test]
fn schemathesis_finds_no_server_error_and_nothing_outside_the_schema() {
    let bed = testbed("z");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(&bed, dir.path());
    let with = fuzz(&bed, dir.path(), Some(TOKEN), 60);
    let without = fuzz(&bed, dir.path(), None, 20);
    eprintln!("schemathesis: {with} cases with the token, {without} without, 0 failures");
    assert_eq!(http_get(&bed, "/healthz").0, 200);
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}

/// Raw bytes to the API from the server namespace; the status of the answer (0: none).
fn raw(bed: &Testbed, request: Vec<u8>) -> (u16, String) {
    in_netns(&bed.srv, move || {
        let mut s = TcpStream::connect("127.0.0.1:9180").expect("connect to the API");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_owned())
            .unwrap_or_default();
        (code, body)
    })
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn hostile_bodies_and_concurrent_writers_get_clean_answers() {
    let bed = testbed("y");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(&bed, dir.path());
    // 10 MB: past `max_body_bytes` (8 MiB): 413 with a JSON body.
    let big = vec![b' '; 10 << 20];
    let (code, body) = raw(&bed, post("/v1/lists/blacklist", &big));
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    // Deep JSON, invalid UTF-8, a truncated body: 400, never 5xx.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for bad in [
        deep.into_bytes(),
        b"{\"entries\":[{\"net\":\"\xff\xfe\"}]}".to_vec(),
        b"{\"entries\":[{\"net\":".to_vec(),
    ] {
        let (code, body) = raw(&bed, post("/v1/lists/blacklist", &bad));
        assert_eq!(code, 400, "{body}");
    }
    // An 8 MB reason: refused, not logged whole.
    let reason = "r".repeat(8 << 20);
    let (code, body) = raw(
        &bed,
        post(
            "/v1/report",
            format!(r#"{{"ip":"198.51.100.9","reason":"{reason}"}}"#).as_bytes(),
        ),
    );
    assert!(code == 400 || code == 413, "{code} {body}");
    // 32 writers for 10 s: every answer a 200, throughput and p99 reported.
    let end = Instant::now() + Duration::from_secs(10);
    let workers: Vec<_> = (0..32u32)
        .map(|w| {
            let srv = bed.srv.clone();
            std::thread::spawn(move || {
                in_netns(&srv, move || {
                    let mut times = Vec::new();
                    let mut n = 0u32;
                    while Instant::now() < end {
                        let body = format!(
                            r#"{{"entries":[{{"net":"10.{w}.{}.{}","duration":"1h"}}]}}"#,
                            n / 256 % 256,
                            n % 256
                        );
                        let t = Instant::now();
                        let mut s = TcpStream::connect("127.0.0.1:9180").unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        s.write_all(&post("/v1/lists/graylist", body.as_bytes()))
                            .unwrap();
                        let mut out = String::new();
                        let _ = s.read_to_string(&mut out);
                        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
                        times.push(t.elapsed());
                        n += 1;
                    }
                    times
                })
            })
        })
        .collect();
    let mut times: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    eprintln!(
        "32 concurrent writers for 10 s: {} requests ({:.0}/s), p50 {:?}, p99 {p99:?}",
        times.len(),
        times.len() as f64 / 10.0,
        times[times.len() / 2]
    );
    assert_eq!(http_get(&bed, "/healthz").0, 200);
    let (exit, log) = daemon.terminate();
    assert!(exit.success(), "{log}");
}
