//! The last good copy on disk.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::super::*;
use crate::{
    model::Ts,
    testing::{net, T0},
};

fn meta() -> Meta {
    Meta {
        etag: Some("W/\"5f-abc\"".to_owned()),
        last_modified: Some("Mon, 01 Jan 2024 00:00:00 GMT".to_owned()),
        fetched: T0,
        changed: Ts(T0.0 - 3_600_000),
    }
}

fn nets() -> BTreeSet<IpNet> {
    [
        "1.10.16.0/20",
        "198.51.100.7/32",
        "2001:db8:bad::/48",
        "::1/128",
    ]
    .into_iter()
    .map(net)
    .collect()
}

#[test]
fn a_saved_copy_loads_back_and_is_readable_text() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_last_good(dir.path(), "level1").unwrap(), None);
    save_last_good(dir.path(), "level1", &nets(), &meta()).unwrap();
    assert_eq!(
        load_last_good(dir.path(), "level1").unwrap(),
        Some((nets(), meta()))
    );
    let path = store_path(dir.path(), "level1").unwrap();
    assert_eq!(path, dir.path().join("level1.feed"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("# ipguard feed v1 {"));
    assert_eq!(
        lines.collect::<Vec<_>>(),
        [
            "1.10.16.0/20",
            "198.51.100.7/32",
            "::1/128",
            "2001:db8:bad::/48"
        ]
    );
    // The file is a netset itself.
    assert_eq!(parse(FeedFormat::Netset, &text).unwrap().nets, nets());

    // An empty copy and empty metadata round-trip too.
    save_last_good(dir.path(), "empty", &BTreeSet::new(), &Meta::default()).unwrap();
    assert_eq!(
        load_last_good(dir.path(), "empty").unwrap(),
        Some((BTreeSet::new(), Meta::default()))
    );
}

#[test]
fn a_save_replaces_the_copy_whole_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    save_last_good(dir.path(), "drop", &nets(), &meta()).unwrap();
    let smaller: BTreeSet<IpNet> = [net("203.0.113.0/24")].into();
    let later = Meta {
        etag: None,
        ..meta()
    };
    save_last_good(dir.path(), "drop", &smaller, &later).unwrap();
    assert_eq!(
        load_last_good(dir.path(), "drop").unwrap(),
        Some((smaller.clone(), later.clone()))
    );
    // A temporary file left by a crash is replaced, not an obstacle.
    std::fs::write(dir.path().join(".drop.feed.tmp"), "half a fi").unwrap();
    save_last_good(dir.path(), "drop", &nets(), &meta()).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["drop.feed"]);
}

#[test]
fn a_corrupt_copy_is_an_error_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path(), "f").unwrap();
    let header = "# ipguard feed v1 \
                  {\"etag\":null,\"last_modified\":null,\"fetched\":1,\"changed\":1,\"entries\":2}";
    let cases = [
        (
            "1.2.3.4/32\n".to_owned(),
            1,
            "the header does not start with",
        ),
        (
            "# ipguard feed v1 {nope\n".to_owned(),
            1,
            "key must be a string",
        ),
        (
            format!("{header}\n1.2.3.0/24\n1.2.3.4/24\n"),
            3,
            "host bits set",
        ),
        (
            format!("{header}\n1.2.3.0/24\n"),
            2,
            "it ends after 1 entries, the header says 2",
        ),
        (
            format!("{header}\n1.2.3.0/24\n1.2.4.0/24\n1.2.5.0/24\n"),
            4,
            "the header says 2",
        ),
        (String::new(), 1, "the header does not start with"),
    ];
    for (text, line, reason) in cases {
        std::fs::write(&path, &text).unwrap();
        let e = load_last_good(dir.path(), "f").unwrap_err();
        let shown = e.to_string();
        let start = format!(
            "the feed's last good copy {} is corrupt at line {line}: ",
            path.display()
        );
        assert!(shown.starts_with(&start), "{text:?}: {shown}");
        assert!(shown.contains(reason), "{text:?}: {shown}");
    }
}

#[test]
fn names_unfit_for_a_file_are_refused() {
    for name in ["level1", "spamhaus-drop", "a", "A_9", &"x".repeat(64)] {
        assert_eq!(validate_name(name), Ok(()), "{name}");
    }
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "",
        "..",
        "a/b",
        "a b",
        ".hidden",
        "naïve",
        "a\0",
        &"x".repeat(65),
    ] {
        let e = validate_name(name).unwrap_err();
        assert!(matches!(e, FeedError::BadName { .. }), "{name:?}");
        assert!(save_last_good(dir.path(), name, &nets(), &meta()).is_err());
        assert!(load_last_good(dir.path(), name).is_err());
    }
    assert_eq!(
        validate_name("a/b").unwrap_err().to_string(),
        "invalid feed name \"a/b\": use 1 to 64 letters, digits, `-` or `_`"
    );
}

#[test]
fn a_save_into_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    let e = save_last_good(&gone, "f", &nets(), &meta()).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "cannot save the feed's last good copy {}: ",
            gone.join("f.feed").display()
        )),
        "{e}"
    );
}
