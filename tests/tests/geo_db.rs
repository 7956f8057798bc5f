//! T0 (no root): the geo module against MaxMind DB files generated here by
//! `tests/geo/make_mmdb.py` (mmdb-writer from the `target/pytools` venv): opening,
//! lookups, and compilation of country and ASN sets to prefixes.
//!
//! The expected prefixes follow from the script's tables; keep both in step.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use ipguard::geo::{GeoDb, GeoError, MAX_DB_BYTES};
use ipnet::IpNet;

fn make(dir: &Path, file: &str, args: &[&str]) -> PathBuf {
    ipguard_tests::pytools::make_mmdb(dir, file, args)
}

fn open(dir: &Path, file: &str, kind: &str) -> GeoDb {
    let path = make(dir, file, &[kind]);
    GeoDb::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn codes(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn covers(list: &[IpNet], addr: &str) -> bool {
    let addr = ip(addr);
    list.iter().any(|n| n.contains(&addr))
}

/// 12.0.0.0/8 without DE's 12.34.0.0/16.
const US_V4: &[&str] = &[
    "12.0.0.0/11",
    "12.32.0.0/15",
    "12.35.0.0/16",
    "12.36.0.0/14",
    "12.40.0.0/13",
    "12.48.0.0/12",
    "12.64.0.0/10",
    "12.128.0.0/9",
];

#[test]
fn opens_and_reports_the_type() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        open(dir.path(), "c.mmdb", "country").database_type(),
        "GeoLite2-Country"
    );
    let asn = open(dir.path(), "a.mmdb", "asn");
    assert_eq!(asn.database_type(), "GeoLite2-ASN");
    assert!(asn.build_epoch() > 1_600_000_000);
    assert_eq!(asn.path(), dir.path().join("a.mmdb"));
}

#[test]
fn unusable_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.mmdb");
    let e = GeoDb::open(&missing).unwrap_err();
    assert!(matches!(e, GeoError::Read { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{e}"
    );

    let text = dir.path().join("GeoLite2-Country.mmdb");
    std::fs::write(&text, "not a database\n".repeat(100)).unwrap();
    let e = GeoDb::open(&text).unwrap_err();
    assert!(matches!(e, GeoError::Invalid { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}: not a valid MaxMind DB file", text.display())));
    assert!(!msg.contains('\n'), "{msg}");

    // Sparse: refused from its size, before anything is read.
    let huge = dir.path().join("huge.mmdb");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_DB_BYTES + 1)
        .unwrap();
    let e = GeoDb::open(&huge).unwrap_err();
    assert!(matches!(e, GeoError::TooLarge { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&huge.display().to_string()),
        "{e}"
    );
}

#[test]
fn country_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "c.mmdb", "country");
    let country = |s: &str| db.country(ip(s));
    assert_eq!(country("192.0.2.200").as_deref(), Some("XA"));
    assert_eq!(country("2001:db8:a::1").as_deref(), Some("XA"));
    assert_eq!(country("12.34.5.6").as_deref(), Some("DE"), "the split");
    assert_eq!(country("12.35.5.6").as_deref(), Some("US"));
    assert_eq!(country("81.2.69.160").as_deref(), Some("DE"));
    assert_eq!(country("2a02:2e0::1").as_deref(), Some("DE"));
    // registered_country when country is absent.
    assert_eq!(country("203.0.113.9").as_deref(), Some("XC"));
    // IPv4-mapped is the IPv4 address.
    assert_eq!(country("::ffff:198.51.100.1").as_deref(), Some("XB"));
    // Unknown addresses, of both families.
    assert_eq!(country("9.9.9.9"), None);
    assert_eq!(country("2a01::1"), None);
    assert_eq!(country("10.0.0.1"), None);
}

#[test]
fn lookups_in_an_ipv4_only_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "c4.mmdb", "country-v4");
    assert_eq!(db.country(ip("192.0.2.1")).as_deref(), Some("XA"));
    assert_eq!(db.country(ip("::ffff:192.0.2.1")).as_deref(), Some("XA"));
    assert_eq!(db.country(ip("2001:db8:a::1")), None, "no IPv6 in the tree");
    let got = db.country_networks(&codes(&["XA", "US"])).unwrap();
    let mut want = nets(US_V4);
    want.push("192.0.2.0/24".parse().unwrap());
    want.sort();
    assert_eq!(got.networks, want);
}

#[test]
fn asn_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "a.mmdb", "asn");
    assert_eq!(
        db.asn(ip("192.0.2.7")),
        Some((64500, Some("Example Transit".to_string())))
    );
    assert_eq!(
        db.asn(ip("2001:db8:a::7")),
        Some((64500, Some("Example Transit".to_string())))
    );
    assert_eq!(db.asn(ip("203.0.113.1")), Some((64502, None)));
    assert_eq!(
        db.asn(ip("2001:db8:c::1")),
        Some((4_200_000_000, Some("Example Wide".to_string())))
    );
    assert_eq!(db.asn(ip("9.9.9.9")), None);
    // The other kind of database answers nothing rather than something wrong.
    assert_eq!(db.country(ip("192.0.2.7")), None);
    let country = open(dir.path(), "c.mmdb", "country");
    assert_eq!(country.asn(ip("192.0.2.7")), None);
}

#[test]
fn countries_compile_to_aggregated_prefixes_v4_as_v4() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "c.mmdb", "country");

    let got = db.country_networks(&codes(&["XA", "XB"])).unwrap();
    // The /25 and /49 siblings come back as their parents.
    assert_eq!(
        got.networks,
        nets(&[
            "192.0.2.0/24",
            "198.51.100.0/24",
            "2001:db8:a::/48",
            "2001:db8:bb::/48"
        ])
    );
    assert!(got.unmatched.is_empty());

    // DE from two different records, and the piece it splits out of US.
    let got = db.country_networks(&codes(&["DE", "ZZ"])).unwrap();
    assert_eq!(
        got.networks,
        nets(&["12.34.0.0/16", "81.2.69.0/24", "2a02:2e0::/32"])
    );
    assert_eq!(got.unmatched, codes(&["ZZ"]));

    let got = db.country_networks(&codes(&["US"])).unwrap();
    let mut want = nets(US_V4);
    want.push("2600:1000::/28".parse().unwrap());
    assert_eq!(got.networks, want);

    let got = db.country_networks(&codes(&["XC"])).unwrap();
    assert_eq!(got.networks, nets(&["203.0.113.0/24"]));
}

#[test]
fn aliases_of_the_ipv4_subtree_are_not_emitted() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "c.mmdb", "country");
    // The database aliases ::ffff:0:0/96, 2001::/32 and 2002::/16 to the IPv4 subtree
    // (lookups through them work), but compilation reports each IPv4 network once.
    assert_eq!(db.country(ip("2002:c000:201::1")).as_deref(), Some("XA"));
    assert_eq!(db.country(ip("2001:0:c000:201::1")).as_deref(), Some("XA"));
    let all = db
        .country_networks(&codes(&["XA", "XB", "XC", "US", "DE"]))
        .unwrap();
    // US and DE together are all of 12.0.0.0/8 again.
    assert_eq!(
        all.networks,
        nets(&[
            "12.0.0.0/8",
            "81.2.69.0/24",
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8:a::/48",
            "2001:db8:bb::/48",
            "2600:1000::/28",
            "2a02:2e0::/32",
        ])
    );
}

#[test]
fn asns_compile_to_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "a.mmdb", "asn");
    let got = db
        .asn_networks(&[64500, 64501, 4_200_000_000, 1].into_iter().collect())
        .unwrap();
    assert_eq!(
        got.networks,
        nets(&[
            "192.0.2.0/24",
            "198.51.100.0/24",
            "2001:db8:a::/48",
            "2001:db8:c::/48"
        ])
    );
    assert_eq!(got.unmatched, [1].into_iter().collect());
}

#[test]
fn a_set_against_the_wrong_kind_of_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let asn = open(dir.path(), "a.mmdb", "asn");
    let e = asn.country_networks(&codes(&["DE"])).unwrap_err();
    assert!(matches!(e, GeoError::NoData { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("GeoLite2-ASN database has no country data"),
        "{e}"
    );
    let country = open(dir.path(), "c.mmdb", "country");
    let e = country
        .asn_networks(&[64500].into_iter().collect())
        .unwrap_err();
    assert!(e.to_string().contains("no autonomous system data"), "{e}");
}

#[test]
fn allow_countries_drops_the_rest_but_not_the_special_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "c.mmdb", "country");
    let out = db.networks_outside(&codes(&["DE"])).unwrap();
    let dropped = |a: &str| covers(&out.networks, a);
    assert!(out.unmatched.is_empty());
    // The allowed country passes, in both families and both of its records.
    for a in ["12.34.0.1", "81.2.69.1", "2a02:2e0::1"] {
        assert!(!dropped(a), "{a} is DE");
    }
    // Other countries and addresses the database does not know are dropped.
    for a in ["12.35.0.1", "9.9.9.9", "2600:1000::1", "2a01::1"] {
        assert!(dropped(a), "{a} is outside DE");
    }
    // Special-purpose ranges pass, even where the database places them in a country
    // (the test data uses documentation ranges).
    for a in [
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "127.0.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "224.0.0.1",
        "192.0.2.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "ff02::1",
        "2001:db8:bb::1",
        "198.51.100.1",
    ] {
        assert!(!dropped(a), "{a} is special-purpose");
    }
    // Everything else is covered exactly once, as aggregated prefixes.
    assert_eq!(ipguard::geo::aggregate(&out.networks), out.networks);
}

#[test]
fn a_country_of_100k_prefixes_compiles() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let path = make(dir.path(), "large.mmdb", &["large", "--prefixes", "100000"]);
    eprintln!("generated {} in {:?}", path.display(), started.elapsed());

    let started = Instant::now();
    let db = GeoDb::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let opened = started.elapsed();
    let got = db.country_networks(&codes(&["XL"])).unwrap();
    let compiled = started.elapsed();
    // The generator leaves a gap after every prefix: nothing aggregates.
    assert_eq!(got.networks.len(), 100_000);
    let v4 = got
        .networks
        .iter()
        .filter(|n| matches!(n, IpNet::V4(_)))
        .count();
    assert_eq!(v4, 80_000);
    assert!(covers(&got.networks, "11.0.0.1"));
    assert!(!covers(&got.networks, "198.51.100.1"), "XB is not XL");

    let outside = db.networks_outside(&codes(&["XL"])).unwrap();
    let complemented = started.elapsed();
    eprintln!(
        "100k prefixes ({} build): open {:?}, compile {:?}, allow-mode complement {:?} \
         ({} prefixes)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        opened,
        compiled - opened,
        complemented - compiled,
        outside.networks.len()
    );
}
