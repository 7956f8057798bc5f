//! `fetch` against a tiny HTTP server on 127.0.0.1 that answers canned responses, and
//! from files.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    sync::mpsc,
    thread,
    time::Duration,
};

use super::super::*;

/// Serves `answer(request)` to the next `connections` connections; each request (head
/// only, lower-cased) is sent on the channel. The thread ends by itself.
fn serve(
    connections: usize,
    answer: impl Fn(&str) -> Vec<u8> + Send + 'static,
) -> (String, mpsc::Receiver<String>) {
    serve_holding(connections, Duration::ZERO, answer)
}

/// As [`serve`], keeping each connection open for `hold` after the answer.
fn serve_holding(
    connections: usize,
    hold: Duration,
    answer: impl Fn(&str) -> Vec<u8> + Send + 'static,
) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&head).to_lowercase();
            let response = answer(&request);
            let _ = tx.send(request);
            let _ = stream.write_all(&response);
            let _ = stream.flush();
            thread::sleep(hold);
        }
    });
    (base, rx)
}

fn response(status: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn limits() -> Limits {
    Limits {
        max_bytes: 1024,
        timeout: Duration::from_secs(10),
    }
}

const BODY: &str = "# test feed\n192.0.2.0/24\n198.51.100.7\n";

#[test]
fn a_body_with_validators_then_not_modified() {
    let (base, requests) = serve(2, |request| {
        if request.contains("if-none-match: \"v1\"") {
            response("304 Not Modified", &["etag: \"v1\""], "")
        } else {
            response(
                "200 OK",
                &[
                    "etag: \"v1\"",
                    "last-modified: Mon, 01 Jan 2024 00:00:00 GMT",
                    "content-type: text/plain",
                ],
                BODY,
            )
        }
    });
    let source = Source::Url(format!("{base}/level1.netset"));
    let first = fetch(&source, &Conditional::default(), &limits()).unwrap();
    assert_eq!(
        first,
        Fetched::Body {
            text: BODY.to_owned(),
            etag: Some("\"v1\"".to_owned()),
            last_modified: Some("Mon, 01 Jan 2024 00:00:00 GMT".to_owned()),
        }
    );
    let request = requests.recv().unwrap();
    assert!(
        request.starts_with("get /level1.netset http/1.1\r\n"),
        "{request}"
    );
    assert!(!request.contains("if-none-match"), "{request}");
    assert!(!request.contains("if-modified-since"), "{request}");

    let Fetched::Body {
        etag,
        last_modified,
        ..
    } = first
    else {
        unreachable!()
    };
    let cond = Conditional {
        etag,
        last_modified,
    };
    assert_eq!(
        fetch(&source, &cond, &limits()).unwrap(),
        Fetched::NotModified
    );
    let request = requests.recv().unwrap();
    assert!(request.contains("if-none-match: \"v1\"\r\n"), "{request}");
    assert!(
        request.contains("if-modified-since: mon, 01 jan 2024 00:00:00 gmt\r\n"),
        "{request}"
    );
}

#[test]
fn a_304_to_an_unconditional_request_is_an_error() {
    let (base, _requests) = serve(1, |_| response("304 Not Modified", &[], ""));
    let e = fetch(&Source::Url(base), &Conditional::default(), &limits()).unwrap_err();
    assert!(matches!(e, FeedError::Status { status: 304, .. }), "{e:?}");
}

#[test]
fn a_404_names_the_status_and_hides_credentials() {
    let (base, _requests) = serve(1, |_| response("404 Not Found", &[], "gone"));
    let url = base.replace("http://", "http://user:secret@") + "/drop.txt?key=token123";
    let e = fetch(&Source::Url(url), &Conditional::default(), &limits()).unwrap_err();
    let host = base.trim_start_matches("http://");
    assert_eq!(
        e.to_string(),
        format!("feed http://{host}/drop.txt?… answered HTTP 404 Not Found")
    );
    let (base, _requests) = serve(1, |_| response("599 Odd", &[], ""));
    let e = fetch(&Source::Url(base), &Conditional::default(), &limits()).unwrap_err();
    assert!(e.to_string().ends_with("answered HTTP 599"), "{e}");
}

#[test]
fn an_oversize_body_is_refused_with_or_without_a_length() {
    let big = "1.2.3.4\n".repeat(200);
    let with_length = response("200 OK", &[], &big);
    let (base, _requests) = serve(1, move |_| with_length.clone());
    let e = fetch(&Source::Url(base), &Conditional::default(), &limits()).unwrap_err();
    assert!(matches!(e, FeedError::TooLarge { max: 1024, .. }), "{e:?}");

    // No content-length: read until the connection closes, and stopped at the limit.
    let until_close = format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{big}").into_bytes();
    let (base, _requests) = serve(1, move |_| until_close.clone());
    let e = fetch(&Source::Url(base), &Conditional::default(), &limits()).unwrap_err();
    assert!(e.to_string().ends_with("is larger than 1024 bytes"), "{e}");
}

#[test]
fn a_slow_server_times_out() {
    let quick = Limits {
        max_bytes: 1024,
        timeout: Duration::from_millis(300),
    };
    let (base, _requests) = serve(1, |_| {
        thread::sleep(Duration::from_secs(3));
        response("200 OK", &[], BODY)
    });
    let e = fetch(&Source::Url(base), &Conditional::default(), &quick).unwrap_err();
    assert!(matches!(e, FeedError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().ends_with("timed out after 300ms"), "{e}");

    // Headers at once, then a body that never comes: the timeout covers the whole fetch.
    let (base, _requests) = serve_holding(1, Duration::from_secs(3), |_| {
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n1.2.3.4\n".to_vec()
    });
    let e = fetch(&Source::Url(base), &Conditional::default(), &quick).unwrap_err();
    assert!(matches!(e, FeedError::Timeout { .. }), "{e:?}");
}

#[test]
fn html_served_as_a_feed_fetches_but_does_not_parse() {
    let (base, _requests) = serve(1, |_| {
        response(
            "200 OK",
            &["content-type: text/html"],
            "<html>maintenance</html>",
        )
    });
    let Fetched::Body { text, .. } =
        fetch(&Source::Url(base), &Conditional::default(), &limits()).unwrap()
    else {
        panic!("no body")
    };
    assert!(matches!(
        parse(FeedFormat::Netset, &text),
        Err(FeedError::NotAList { .. })
    ));
}

#[test]
fn a_binary_body_is_not_text() {
    let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80]);
    let (base, _requests) = serve(1, move |_| bytes.clone());
    let e = fetch(&Source::Url(base), &Conditional::default(), &limits()).unwrap_err();
    assert!(matches!(e, FeedError::NotText { .. }), "{e:?}");
}

#[test]
fn redirects_are_followed_but_not_to_other_schemes() {
    let (base, requests) = serve(12, |request| {
        let path = request.split(' ').nth(1).unwrap_or_default();
        match path {
            "/old" => response("301 Moved Permanently", &["location: /dir/new"], ""),
            "/dir/new" => response("302 Found", &["location: newer?x=1"], ""),
            "/dir/newer?x=1" => response("200 OK", &[], BODY),
            "/evil" => response("302 Found", &["location: file:///etc/passwd"], ""),
            "/ftp" => response(
                "307 Temporary Redirect",
                &["location: ftp://127.0.0.1/x"],
                "",
            ),
            "/nowhere" => response("302 Found", &[], ""),
            _ => response("308 Permanent Redirect", &["location: /loop"], ""),
        }
    });
    let get = |path: &str| {
        fetch(
            &Source::Url(format!("{base}{path}")),
            &Conditional {
                etag: Some("\"e\"".to_owned()),
                last_modified: None,
            },
            &limits(),
        )
    };
    let got = get("/old");
    assert!(
        matches!(got, Ok(Fetched::Body { ref text, .. }) if text == BODY),
        "{got:?}"
    );
    let seen: Vec<String> = requests.try_iter().collect();
    assert_eq!(seen.len(), 3);
    // The validators go along to where the list is.
    assert!(seen[2].contains("if-none-match: \"e\""), "{}", seen[2]);

    let e = get("/evil").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "feed {base}/evil could not be fetched: redirected to file:///etc/passwd, \
             not an http(s) URL"
        )
    );
    let e = get("/ftp").unwrap_err();
    assert!(
        e.to_string()
            .ends_with("redirected to ftp://127.0.0.1/x, not an http(s) URL"),
        "{e}"
    );
    let e = get("/nowhere").unwrap_err();
    assert!(
        e.to_string().ends_with("HTTP 302 Found without a Location"),
        "{e}"
    );
    let e = get("/loop").unwrap_err();
    assert!(e.to_string().ends_with("more than 5 redirects"), "{e}");
}

#[test]
fn redirect_targets_resolve_like_a_browser() {
    let base: ureq::http::Uri = "https://feeds.example/lists/a/level1.netset?k=1"
        .parse()
        .unwrap();
    let join = |l: &str| super::super::fetch::join(&base, l).map(|u| u.to_string());
    assert_eq!(join("/x").as_deref(), Some("https://feeds.example/x"));
    assert_eq!(
        join("b.netset").as_deref(),
        Some("https://feeds.example/lists/a/b.netset")
    );
    assert_eq!(
        join("//cdn.example/y").as_deref(),
        Some("https://cdn.example/y")
    );
    assert_eq!(
        join("http://cdn.example/z").as_deref(),
        Some("http://cdn.example/z")
    );
    assert_eq!(
        join("HTTPS://cdn.example/z").as_deref(),
        Some("https://cdn.example/z")
    );
    assert_eq!(join("file:///etc/passwd"), None);
    assert_eq!(join("javascript:alert(1)"), None);
    assert_eq!(join("gopher://x/"), None);
}

#[test]
fn urls_are_shown_without_credentials() {
    let redact = super::super::fetch::redact;
    assert_eq!(
        redact("https://user:pw@feeds.example:8443/list.txt?token=abc#frag"),
        "https://feeds.example:8443/list.txt?…"
    );
    assert_eq!(redact("http://feeds.example/x"), "http://feeds.example/x");
    assert_eq!(redact("not a url?key=1"), "not a url");
    assert_eq!(redact("ht tp://user:pw@host/x?k"), "ht tp://host/x");
}

#[test]
fn only_http_and_https_urls_are_taken() {
    for url in [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "example.com/list",
        "http://",
        "",
    ] {
        let e = fetch(
            &Source::Url(url.to_owned()),
            &Conditional::default(),
            &limits(),
        )
        .unwrap_err();
        assert!(
            matches!(e, FeedError::UnsupportedUrl { .. }),
            "{url}: {e:?}"
        );
    }
}

#[test]
fn https_is_compiled_in() {
    // A TLS handshake against a plain HTTP server fails in TLS, not as "unsupported".
    let (base, _requests) = serve(1, |_| response("200 OK", &[], BODY));
    let url = base.replace("http://", "https://");
    let e = fetch(&Source::Url(url), &Conditional::default(), &limits()).unwrap_err();
    assert!(matches!(e, FeedError::Http { .. }), "{e:?}");
    assert!(!e.to_string().contains("not supported"), "{e}");
}

#[test]
fn files_are_read_bounded_and_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.netset");
    std::fs::write(&path, BODY).unwrap();
    let got = fetch(
        &Source::Path(path.clone()),
        &Conditional::default(),
        &limits(),
    )
    .unwrap();
    assert_eq!(
        got,
        Fetched::Body {
            text: BODY.to_owned(),
            etag: None,
            last_modified: None
        }
    );

    let missing = dir.path().join("missing.netset");
    let e = fetch(
        &Source::Path(missing.clone()),
        &Conditional::default(),
        &limits(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read feed file {}: ", missing.display())),
        "{e}"
    );

    std::fs::write(&path, "1.2.3.4\n".repeat(200)).unwrap();
    let e = fetch(
        &Source::Path(path.clone()),
        &Conditional::default(),
        &limits(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");

    std::fs::write(&path, [0xffu8, 0xfe]).unwrap();
    let e = fetch(&Source::Path(path), &Conditional::default(), &limits()).unwrap_err();
    assert!(matches!(e, FeedError::NotText { .. }), "{e:?}");

    let e = fetch(
        &Source::Path(dir.path().to_owned()),
        &Conditional::default(),
        &limits(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}
