//! T0: every endpoint through the real router, against an in-memory dataplane.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::connect_info::MockConnectInfo,
    http::{Method, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt as _;
use ipguard_common::{SourceCounters, Stat, StatCounter};
use ipnet::IpNet;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::*;
use crate::{config::Config, controller::Placement, dataplane::MemoryBackend};

const CONFIG: &str = r#"
[lists]
whitelist = ["127.0.0.0/8", "::1", "10.0.0.0/8"]
blacklist = ["203.0.113.0/24"]
[report]
count = 2
window = "60s"
duration = "10m"
"#;

struct Api {
    app: Router,
    ctl: Arc<Mutex<Controller<MemoryBackend>>>,
}

fn api_as(client: &str, token: Option<&str>, max_body: usize) -> Api {
    let config = Config::parse(CONFIG, "test.toml").unwrap();
    let mut backend = MemoryBackend::default();
    backend.stats.0[Stat::DropBlacklist as usize] = StatCounter {
        packets: 7,
        bytes: 700,
    };
    backend.stats.0[Stat::PassUnlisted as usize] = StatCounter {
        packets: 5,
        bytes: 500,
    };
    backend.sources.insert(
        "198.51.100.1".parse().unwrap(),
        vec![
            SourceCounters {
                packets: 3,
                bytes: 300,
                syns: 2,
                dropped: 1,
                ..Default::default()
            },
            SourceCounters {
                packets: 1,
                bytes: 100,
                syns: 0,
                dropped: 0,
                ..Default::default()
            },
        ],
    );
    let placement = Placement {
        interface: "eth9".into(),
        xdp_mode: "native".into(),
    };
    let (ctl, _) = Controller::new(backend, &config, placement, Now::read()).unwrap();
    let ctl = Arc::new(Mutex::new(ctl));
    let state = AppState {
        ctl: ctl.clone(),
        token: token.map(str::to_owned),
        changed: Default::default(),
        reload: None,
        metrics_auth: false,
        fleet_reports: None,
        feeds: None,
    };
    let peer: SocketAddr = if client.contains(':') {
        format!("[{client}]:40000")
    } else {
        format!("{client}:40000")
    }
    .parse()
    .unwrap();
    let app = router(state, max_body).layer(MockConnectInfo(peer));
    Api { app, ctl }
}

fn api() -> Api {
    api_as("192.0.2.50", None, 1 << 20)
}

impl Api {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None, None).await
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(body), None).await
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The engine's entries and the tables' contents, to show that a refused request changed
    /// nothing.
    fn state(&self) -> (Vec<String>, Vec<String>) {
        let c = self.ctl.lock().unwrap();
        let mut entries: Vec<String> = c
            .policy()
            .engine()
            .entries()
            .map(|(n, e)| format!("{} {n} {:?} {}", e.list, e.until, e.reason))
            .collect();
        entries.sort();
        let tables = c
            .backend()
            .table
            .entries()
            .iter()
            .map(|(n, e)| format!("{n} {e:?}"))
            .collect();
        (entries, tables)
    }
}

#[tokio::test]
async fn healthz() {
    let (s, v) = api().get("/healthz").await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn status_reports_lists_traffic_and_maps() {
    let (s, v) = api().get("/v1/status").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["interface"], "eth9");
    assert_eq!(v["xdp_mode"], "native");
    assert_eq!(
        v["entries"],
        json!({"whitelist": 3, "graylist": 0, "blacklist": 1, "rules": 0})
    );
    assert_eq!(v["verdicts"]["drop"], json!({"packets": 7, "bytes": 700}));
    assert_eq!(v["verdicts"]["pass"], json!({"packets": 5, "bytes": 500}));
    assert_eq!(v["lists"]["blacklist"]["packets"], 7);
    // The IPv4 host map holds addresses of prefixes longer than /24: none here.
    assert_eq!(v["maps"]["lpm_v4"], json!({"capacity": 2097152, "used": 0}));
    assert_eq!(v["maps"]["lpm_v6"]["used"], 1);
    assert_eq!(v["maps"]["sources"]["capacity"], 1048576);
}

#[tokio::test]
async fn explain_blacklisted_whitelisted_and_unlisted() {
    let a = api();
    let (s, v) = a.get("/v1/ips/203.0.113.9").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"ip": "203.0.113.9", "verdict": "drop", "list": "blacklist", "prefix": "203.0.113.0/24",
               "reason": "config", "source": "config", "strikes": 0, "expires": null, "retry_after": null,
               "counters": {"packets": 0, "bytes": 0, "syns": 0, "dropped": 0}})
    );
    let (_, v) = a.get("/v1/ips/10.1.2.3").await;
    assert_eq!(
        (v["verdict"].clone(), v["list"].clone(), v["prefix"].clone()),
        (json!("pass"), json!("whitelist"), json!("10.0.0.0/8"))
    );
    let (_, v) = a.get("/v1/ips/198.51.100.1").await;
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["list"], Value::Null);
    assert_eq!(
        v["counters"],
        json!({"packets": 4, "bytes": 400, "syns": 2, "dropped": 1})
    );
    let (s, v) = a.get("/v1/ips/not-an-ip").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("not-an-ip"));
}

#[tokio::test]
async fn explain_one_packet_takes_proto_and_port_and_refuses_bad_ones() {
    let a = api();
    // No scoped rules here: a packet's verdict is the address's, echoed with the packet.
    let (s, v) = a.get("/v1/ips/203.0.113.9?packet=tcp/22").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["packet"], "tcp/22");
    assert_eq!(v["verdict"], "drop");
    assert!(v.get("scoped").is_none(), "{v}");
    for (query, shown) in [("icmp", "icmp"), ("udp", "udp"), ("udp/65535", "udp/65535")] {
        let (s, v) = a.get(&format!("/v1/ips/203.0.113.9?packet={query}")).await;
        assert_eq!((s, v["packet"].clone()), (StatusCode::OK, json!(shown)));
    }
    for (query, needle) in [
        ("packet=22", "names no protocol"),
        ("packet=sctp/1", "names no protocol"),
        ("packet=tcp/0", "no port from 1 to 65535"),
        ("packet=tcp/70000", "no port from 1 to 65535"),
        ("packet=tcp/", "no port from 1 to 65535"),
        ("packet=icmp/7", "gives icmp a port"),
        ("packet=tcp&bogus=1", "bogus"),
    ] {
        let (s, v) = a.get(&format!("/v1/ips/203.0.113.9?{query}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{query}: {v}"
        );
    }
}

#[tokio::test]
async fn add_then_explain_list_and_remove() {
    let a = api();
    let (s, v) = a
        .post(
            "/v1/lists/graylist",
            json!({"entries": [
                {"net": "198.51.100.0/24", "duration": "2h", "reason": "scanner"},
                {"net": "2001:db8:bad::/48"}
            ]}),
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"added": 2, "replaced": 0})));
    let (_, v) = a.get("/v1/ips/198.51.100.77").await;
    assert_eq!(v["verdict"], "drop");
    assert_eq!(v["list"], "graylist");
    assert_eq!(v["source"], "api");
    assert_eq!(v["reason"], "scanner");
    let retry = v["retry_after"].as_u64().unwrap();
    assert!((7199..=7200).contains(&retry), "{retry}");
    assert!(v["expires"].as_str().unwrap().ends_with('Z'));
    // Replacing is counted as such.
    let (_, v) = a
        .post(
            "/v1/lists/graylist",
            json!({"entries": [{"net": "198.51.100.0/24", "duration": "forever"}]}),
        )
        .await;
    assert_eq!(v, json!({"added": 0, "replaced": 1}));
    let (_, v) = a.get("/v1/lists/graylist").await;
    assert_eq!(
        v,
        json!({"entries": [
            {"net": "198.51.100.0/24", "expires": null, "reason": "api", "source": "api"},
            {"net": "2001:db8:bad::/48", "expires": null, "reason": "api", "source": "api"}
        ], "next_cursor": null})
    );
    // The tables hold the compiled decision.
    assert!(a
        .ctl
        .lock()
        .unwrap()
        .backend()
        .table
        .entries()
        .contains_key(&"198.51.100.0/24".parse().unwrap()));
    let (s, v) = a
        .call(
            Method::DELETE,
            "/v1/lists/graylist/198.51.100.0%2F24",
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({"removed": "198.51.100.0/24"}))
    );
    assert!(!a
        .ctl
        .lock()
        .unwrap()
        .backend()
        .table
        .entries()
        .contains_key(&"198.51.100.0/24".parse().unwrap()));
    let (s, v) = a
        .call(
            Method::DELETE,
            "/v1/lists/graylist/198.51.100.0%2F24",
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "not listed");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let a = api();
    let before = a.state();
    let cases = [
        (
            json!({"entries": [{"net": "198.51.100.0/24"}, {"net": "198.51.100.300"}]}),
            StatusCode::BAD_REQUEST,
            Some(1),
            "198.51.100.300",
        ),
        (
            json!({"entries": [{"net": "198.51.100.7/24"}]}),
            StatusCode::BAD_REQUEST,
            Some(0),
            "host bits",
        ),
        (
            json!({"entries": [{"net": "198.51.100.0/24", "duration": "10x"}]}),
            StatusCode::BAD_REQUEST,
            Some(0),
            "10x",
        ),
        (
            json!({"entries": [{"net": "198.51.100.0/24", "duration": "0s"}]}),
            StatusCode::BAD_REQUEST,
            Some(0),
            "duration",
        ),
        (
            json!({"entries": [{"net": "198.51.100.0/24"}, {"net": "198.51.100.0/24"}]}),
            StatusCode::BAD_REQUEST,
            Some(1),
            "twice",
        ),
        (
            json!({"entries": []}),
            StatusCode::BAD_REQUEST,
            None,
            "empty",
        ),
        (
            json!({"entries": [{"net": "198.51.100.0/24", "color": "red"}]}),
            StatusCode::BAD_REQUEST,
            None,
            "color",
        ),
        (
            json!({"entries": "198.51.100.0/24"}),
            StatusCode::BAD_REQUEST,
            None,
            "",
        ),
    ];
    for (body, status, index, needle) in cases {
        let (s, v) = a.post("/v1/lists/blacklist", body.clone()).await;
        assert_eq!(s, status, "{body} -> {v}");
        assert_eq!(
            v["index"].as_u64().map(|i| i as usize),
            index,
            "{body} -> {v}"
        );
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{body} -> {v}"
        );
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(a.state(), before, "{body} changed the state");
    }
    let (s, v) = a
        .post(
            "/v1/lists/redlist",
            json!({"entries": [{"net": "198.51.100.0/24"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["detail"].as_str().unwrap().contains("redlist"));
    let (s, v) = a
        .raw(
            Method::POST,
            "/v1/lists/blacklist",
            "application/json",
            "{\"entries\": [",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "malformed JSON");
    let (s, _) = a
        .raw(Method::POST, "/v1/lists/blacklist", "text/plain", "{}")
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _) = a
        .call(Method::DELETE, "/v1/lists/blacklist/nonsense", None, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(a.state(), before);
}

#[tokio::test]
async fn oversize_body_is_413_and_changes_nothing() {
    let a = api_as("192.0.2.50", None, 2048);
    let before = a.state();
    let entries: Vec<Value> = (0..200)
        .map(|i| json!({"net": format!("192.0.2.{i}")}))
        .collect();
    let (s, v) = a
        .post("/v1/lists/blacklist", json!({"entries": entries}))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"], "body too large");
    assert_eq!(a.state(), before);
}

#[tokio::test]
async fn token_is_required_on_v1_only() {
    let a = api_as("192.0.2.50", Some("s3cret"), 1 << 20);
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let (s, v) = a.call(Method::GET, "/v1/status", None, token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(v["error"], "unauthorized");
    }
    let (s, _) = a
        .call(
            Method::POST,
            "/v1/lists/blacklist",
            Some(json!({"entries": [{"net": "192.0.2.0/24"}]})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        a.ctl
            .lock()
            .unwrap()
            .policy()
            .engine()
            .count(ListKind::Blacklist),
        1,
        "unauthorized add applied"
    );
    assert_eq!(
        a.call(Method::GET, "/v1/status", None, Some("s3cret"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(a.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(a.get("/metrics").await.0, StatusCode::OK);
}

#[tokio::test]
async fn listing_the_callers_own_address_or_loopback_needs_force() {
    let a = api_as("192.0.2.50", None, 1 << 20);
    let before = a.state();
    for net in [
        "192.0.2.0/24",
        "192.0.2.50",
        "0.0.0.0/0",
        "127.0.0.1",
        "127.0.0.0/8",
        "::1",
        "::/0",
    ] {
        let (s, v) = a
            .post(
                "/v1/lists/blacklist",
                json!({"entries": [{"net": "198.51.100.0/24"}, {"net": net}]}),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{net}: {v}");
        assert_eq!(v["index"], 1);
        assert!(v["detail"].as_str().unwrap().contains("force"), "{v}");
        assert_eq!(a.state(), before);
    }
    // The whitelist never locks anyone out.
    assert_eq!(
        a.post(
            "/v1/lists/whitelist",
            json!({"entries": [{"net": "192.0.2.0/24"}]})
        )
        .await
        .0,
        StatusCode::OK
    );
    // Forced, it goes through.
    let (s, _) = a
        .post(
            "/v1/lists/graylist",
            json!({"entries": [{"net": "192.0.2.50", "duration": "1m"}], "force": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // An IPv4-mapped IPv6 caller is the IPv4 address.
    let b = api_as("::ffff:192.0.2.50", None, 1 << 20);
    assert_eq!(
        b.post(
            "/v1/lists/blacklist",
            json!({"entries": [{"net": "192.0.2.50"}]})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn pagination_walks_every_entry_once_in_order() {
    let a = api();
    let entries: Vec<Value> = (0..250u32)
        .map(|i| json!({"net": format!("198.51.{}.{}", i / 200, i % 200)}))
        .collect();
    assert_eq!(
        a.post("/v1/lists/blacklist", json!({"entries": entries}))
            .await
            .0,
        StatusCode::OK
    );
    let mut seen = Vec::new();
    let mut uri = "/v1/lists/blacklist?limit=100".to_owned();
    let mut pages = 0;
    loop {
        let (s, v) = a.get(&uri).await;
        assert_eq!(s, StatusCode::OK);
        pages += 1;
        for e in v["entries"].as_array().unwrap() {
            seen.push(e["net"].as_str().unwrap().parse::<IpNet>().unwrap());
        }
        match v["next_cursor"].as_str() {
            Some(c) => {
                uri = format!(
                    "/v1/lists/blacklist?limit=100&cursor={}",
                    c.replace('/', "%2F")
                )
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 251); // + 203.0.113.0/24 from the config
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted);
    assert_eq!(
        a.get("/v1/lists/blacklist?limit=0").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        a.get("/v1/lists/blacklist?limit=10001").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        a.get("/v1/lists/blacklist?cursor=bogus").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn reports_ban_after_the_configured_count() {
    let a = api();
    let (s, v) = a
        .post(
            "/v1/report",
            json!({"ip": "198.51.100.1", "reason": "bad login"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            v["outcome"].clone(),
            v["reports"].clone(),
            v["verdict"].clone()
        ),
        (json!("recorded"), json!(1), json!("pass"))
    );
    let (_, v) = a
        .post(
            "/v1/report",
            json!({"ip": "198.51.100.1", "reason": "bad login"}),
        )
        .await;
    assert_eq!(v["outcome"], "banned");
    assert_eq!(v["verdict"], "drop");
    assert_eq!(v["list"], "graylist");
    assert_eq!(v["source"], "report");
    assert_eq!(v["strikes"], 1);
    assert!(v["reason"].as_str().unwrap().contains("bad login"));
    let (_, v) = a.post("/v1/report", json!({"ip": "10.9.9.9"})).await;
    assert_eq!(v["outcome"], "whitelisted");
    let (s, v) = a.post("/v1/report", json!({"ip": "nope"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().starts_with("ip:"));
}

#[tokio::test]
async fn offenders_rank_by_strikes_with_ban_and_counters() {
    let a = api();
    // 198.51.100.1: two reports, banned; 198.51.100.2: one report, not banned.
    for ip in ["198.51.100.1", "198.51.100.1", "198.51.100.2"] {
        let (s, _) = a
            .post("/v1/report", json!({"ip": ip, "reason": "login"}))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, v) = a.get("/v1/offenders?limit=5").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let top = v["offenders"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{v}");
    assert_eq!(top[0]["ip"], "198.51.100.1");
    assert_eq!(top[0]["strikes"], 1);
    assert_eq!(top[0]["list"], "graylist");
    assert_eq!(top[0]["prefix"], "198.51.100.1/32");
    assert!(top[0]["expires"].is_string());
    // Summed over CPUs, like explain.
    assert_eq!(top[0]["counters"]["packets"], 4);
    assert_eq!(top[1]["ip"], "198.51.100.2");
    assert_eq!(top[1]["strikes"], 0);
    assert_eq!(top[1]["reports"], 1);
    assert!(top[1]["list"].is_null());
    let (_, v) = a.get("/v1/offenders?limit=1").await;
    assert_eq!(v["offenders"].as_array().unwrap().len(), 1);
    for bad in ["limit=0", "limit=1001", "limit=x", "top=3"] {
        let (s, v) = a.get(&format!("/v1/offenders?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
}

#[tokio::test]
async fn list_search_matches_prefix_or_reason_across_pages() {
    let a = api();
    let entries: Vec<Value> = (0..30)
        .map(|i| {
            let reason = if i % 3 == 0 {
                "SSH brute force"
            } else {
                "scanner"
            };
            json!({"net": format!("198.51.100.{i}"), "reason": reason})
        })
        .collect();
    let (s, v) = a
        .post("/v1/lists/blacklist", json!({ "entries": entries }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Case-insensitive on the reason, paged with the cursor like the whole list.
    let mut found = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, v) = a
            .get(&format!(
                "/v1/lists/blacklist?q=ssh&limit=4&cursor={cursor}"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for e in v["entries"].as_array().unwrap() {
            assert_eq!(e["reason"], "SSH brute force");
            found.push(e["net"].as_str().unwrap().to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.replace('/', "%2F"),
            None => break,
        }
    }
    assert_eq!(found.len(), 10, "{found:?}");
    // On the prefix, config entries included.
    let (_, v) = a.get("/v1/lists/blacklist?q=203.0.113").await;
    assert_eq!(v["entries"][0]["net"], "203.0.113.0/24");
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    let (_, v) = a.get("/v1/lists/blacklist?q=").await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 31);
    let (s, _) = a
        .get(&format!("/v1/lists/blacklist?q={}", "a".repeat(257)))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn status_page_is_served_with_a_strict_policy_and_no_token() {
    let a = api_as("192.0.2.50", Some("0123456789abcdef0123"), 1 << 20);
    for (uri, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let res = a.app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        let h = res.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{uri}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let req = Request::builder().uri("/").body(Body::empty()).unwrap();
    let res = a.app.clone().oneshot(req).await.unwrap();
    assert!(res.status().is_redirection());
    assert_eq!(res.headers()["location"], "/ui");
    // The data behind it still needs the token.
    let (s, _) = a.get("/v1/offenders").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let a = api();
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let res = a.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for line in [
        r#"ipguard_packets_total{verdict="drop",list="blacklist"} 7"#,
        r#"ipguard_bytes_total{verdict="pass",list="unlisted"} 500"#,
        r#"ipguard_list_entries{list="whitelist"} 3"#,
        r#"ipguard_map_capacity{map="sources"} 1048576"#,
        "ipguard_reaction_seconds_count 0",
        "# TYPE ipguard_tracked_sources gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn unknown_endpoint_is_a_json_404() {
    let (s, v) = api().get("/v2/nothing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "not found");
}

/// What the probe of the running daemon found, each answered with the right class and a
/// JSON body, changing nothing.
mod probe_findings {
    use super::*;

    #[tokio::test]
    async fn an_expiry_past_the_year_9999_is_refused_not_a_panic() {
        let a = api();
        let before = a.state();
        let (s, v) = a
            .post(
                "/v1/lists/blacklist",
                json!({"entries": [{"net": "198.51.100.0/24", "duration": "213503982334d"}]}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["detail"].as_str().unwrap().contains("36500d"), "{v}");
        assert_eq!(a.state(), before);
        // The controller still answers: nothing was poisoned.
        assert_eq!(a.get("/v1/status").await.0, StatusCode::OK);
        assert_eq!(a.get("/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_full_table_is_507_table_full_and_changes_nothing() {
        let config = Config::parse(
            "[maps]\nlpm_v4_capacity = 2\n[lists]\nwhitelist = [\"127.0.0.0/8\"]\n",
            "t.toml",
        )
        .unwrap();
        let backend =
            MemoryBackend::new(crate::dataplane::MemoryStore::with_capacity(&config.maps));
        let (ctl, _) =
            Controller::new(backend, &config, Placement::default(), Now::read()).unwrap();
        let ctl = Arc::new(Mutex::new(ctl));
        let state = AppState {
            ctl: ctl.clone(),
            token: None,
            changed: Default::default(),
            reload: None,
            metrics_auth: false,
            fleet_reports: None,
            feeds: None,
        };
        let peer: SocketAddr = "192.0.2.50:4000".parse().unwrap();
        let a = Api {
            app: router(state, 1 << 20).layer(MockConnectInfo(peer)),
            ctl,
        };
        let before = a.state();
        let (s, v) = a
            .post(
                "/v1/lists/blacklist",
                json!({"entries": [{"net": "198.51.100.1"}, {"net": "198.51.100.2"}, {"net": "198.51.100.3"}]}),
            )
            .await;
        assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE, "{v}");
        assert_eq!(v["error"], "table full");
        assert!(
            v["detail"].as_str().unwrap().contains("lpm_v4_capacity"),
            "{v}"
        );
        assert_eq!(a.state(), before);
        let (_, m) = a.get("/metrics").await;
        assert!(
            m.as_str()
                .unwrap()
                .contains("ipguard_table_full_total{map=\"IPG_V4_HOSTS\"} 1"),
            "{m}"
        );
        let (_, st) = a.get("/v1/status").await;
        assert_eq!(st["problems"][0]["kind"], "table_full", "{st}");
    }

    #[tokio::test]
    async fn broad_prefixes_need_force_on_every_list() {
        let a = api();
        let before = a.state();
        for (list, net) in [
            ("blacklist", "128.0.0.0/1"),
            ("blacklist", "8000::/1"),
            ("graylist", "2000::/3"),
            ("blacklist", "::ffff:0:0/96"),
            ("whitelist", "0.0.0.0/0"),
            ("whitelist", "::/0"),
        ] {
            let (s, v) = a
                .post(
                    &format!("/v1/lists/{list}"),
                    json!({"entries": [{"net": net}]}),
                )
                .await;
            assert_eq!(s, StatusCode::CONFLICT, "{list} {net}: {v}");
            assert!(v["detail"].as_str().unwrap().contains("force"), "{v}");
        }
        assert_eq!(a.state(), before);
    }

    #[tokio::test]
    async fn a_config_entry_is_not_removed_without_force() {
        let a = api();
        let (s, v) = a
            .call(
                Method::DELETE,
                "/v1/lists/whitelist/10.0.0.0%2F8",
                None,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["error"], "config entry");
        let (s, _) = a
            .call(
                Method::DELETE,
                "/v1/lists/whitelist/10.0.0.0%2F8?force=true",
                None,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }

    #[tokio::test]
    async fn too_many_entries_and_long_reasons_are_refused() {
        let a = api_as("192.0.2.50", None, 64 << 20);
        let entries: Vec<Value> = (0..=crate::api::MAX_ENTRIES as u32)
            .map(|i| json!({"net": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)}))
            .collect();
        let (s, v) = a
            .post("/v1/lists/graylist", json!({ "entries": entries }))
            .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{}", v["detail"]);
        assert_eq!(v["error"], "too many entries");
        let (s, v) = a
            .post(
                "/v1/report",
                json!({"ip": "198.51.100.9", "reason": "r".repeat(2000)}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["detail"].as_str().unwrap().contains("1024"), "{v}");
    }

    #[tokio::test]
    async fn odd_requests_get_json_errors() {
        let a = api();
        // 405.
        let (s, v) = a.call(Method::PUT, "/v1/status", None, None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["error"], "method not allowed", "{v}");
        // 414.
        let long = format!("/v1/ips/{}", "1".repeat(10_000));
        let (s, v) = a.get(&long).await;
        assert_eq!(s, StatusCode::URI_TOO_LONG);
        assert_eq!(v["error"], "uri too long", "{v}");
        // 431.
        let req = Request::builder()
            .uri("/v1/status")
            .header("x-big", "a".repeat(40_000))
            .body(Body::empty())
            .unwrap();
        let res = a.app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        // A path that is not UTF-8 once decoded.
        let (s, v) = a.get("/v1/ips/%ff%fe").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"], "invalid path", "{v}");
    }

    /// What the spec promises for a well-formed request, the server does: a removal
    /// with host bits set is 404 naming the network, a cursor may be any prefix, a reason
    /// is bounded in characters (as JSON Schema counts) not bytes.
    #[tokio::test]
    async fn the_server_is_no_stricter_than_the_spec() {
        let a = api();
        let (s, v) = a
            .call(
                Method::DELETE,
                "/v1/lists/blacklist/198.51.100.7%2F24",
                None,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains("198.51.100.0/24"),
            "{v}"
        );
        assert_eq!(
            a.get("/v1/lists/blacklist?cursor=10.0.0.5%2F8").await.0,
            StatusCode::OK
        );
        let (s, v) = a
            .post(
                "/v1/lists/blacklist",
                json!({"entries": [{"net": "198.51.100.0/24", "reason": "ü".repeat(1024)}]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, _) = a
            .post(
                "/v1/lists/blacklist",
                json!({"entries": [{"net": "198.51.100.0/24", "reason": "ü".repeat(1025)}]}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}

/// `GET`/`PUT /v1/mode`: shown, switched at once (the tables, explain, status and metrics
/// follow), switched back to exactly the tables of before; a bad body changes nothing.
#[tokio::test]
async fn mode_is_shown_switched_and_bad_bodies_change_nothing() {
    let a = api();
    let enforce = json!({"mode": "enforce", "config_mode": "enforce"});
    assert_eq!(a.get("/v1/mode").await, (StatusCode::OK, enforce.clone()));
    let before = a.state();
    let put = |body: Value| a.call(Method::PUT, "/v1/mode", Some(body), None);
    for (body, detail) in [
        (json!({"mode": "Monitor"}), "\"Monitor\" is not a mode"),
        (
            json!({"mode": "dry-run"}),
            "expected one of `enforce`, `monitor`",
        ),
        (json!({"mode": "m".repeat(5000)}), "bytes)"),
        (json!({}), "missing field `mode`"),
        (
            json!({"mode": "monitor", "force": true}),
            "unknown field `force`",
        ),
        (json!({"mode": 1}), "invalid type"),
        (json!("monitor"), "invalid type"),
    ] {
        let (s, v) = put(body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(detail),
            "{body}: {v}"
        );
        assert_eq!(a.state(), before, "{body}");
    }
    let (s, _) = a
        .raw(
            Method::PUT,
            "/v1/mode",
            "text/plain",
            r#"{"mode":"monitor"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _) = a
        .raw(Method::PUT, "/v1/mode", "application/json", "{\"mode\":")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(a.state(), before);
    assert_eq!(a.get("/v1/mode").await.1, enforce);

    // Monitor: the blacklisted /24 passes as would drop; the whitelist is untouched.
    let (s, v) = put(json!({"mode": "monitor"})).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::OK,
            json!({"mode": "monitor", "config_mode": "enforce"})
        )
    );
    let (_, x) = a.get("/v1/ips/203.0.113.9").await;
    assert_eq!(
        (&x["verdict"], &x["list"], &x["would_drop"]),
        (&json!("pass"), &json!("blacklist"), &json!(true)),
        "{x}"
    );
    let (_, x) = a.get("/v1/ips/10.1.2.3").await;
    assert_eq!(x["verdict"], "pass");
    assert!(x.get("would_drop").is_none(), "{x}");
    // A ban added in monitor mode is monitored too.
    let (s, _) = a
        .post(
            "/v1/lists/graylist",
            json!({"entries": [{"net": "198.51.100.0/24"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, x) = a.get("/v1/ips/198.51.100.9").await;
    assert_eq!(
        (&x["verdict"], &x["would_drop"]),
        (&json!("pass"), &json!(true))
    );
    assert_eq!(a.get("/v1/status").await.1["mode"], "monitor");
    {
        let mut c = a.ctl.lock().unwrap();
        c.backend_mut().stats.0[Stat::WouldDropBlacklist as usize] = StatCounter {
            packets: 4,
            bytes: 400,
        };
    }
    let (_, status) = a.get("/v1/status").await;
    assert_eq!(status["lists"]["would_drop_blacklist"]["packets"], 4);
    assert_eq!(status["verdicts"]["pass"]["packets"], 9);
    let (s, metrics) = a.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let metrics = metrics.as_str().unwrap().to_owned();
    for line in [
        "ipguard_would_drop_total{list=\"blacklist\"} 4",
        "ipguard_would_drop_total{list=\"rule\"} 0",
        "ipguard_would_drop_bytes_total{list=\"blacklist\"} 400",
        "ipguard_monitor_mode 1",
        "ipguard_packets_total{verdict=\"pass\",list=\"would_drop_blacklist\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // The same mode again changes nothing; enforce puts the tables back.
    assert_eq!(put(json!({"mode": "monitor"})).await.0, StatusCode::OK);
    assert_eq!(
        put(json!({"mode": "enforce"})).await,
        (StatusCode::OK, enforce.clone())
    );
    let (_, x) = a.get("/v1/ips/203.0.113.9").await;
    assert_eq!(x["verdict"], "drop");
    assert!(x.get("would_drop").is_none(), "{x}");
    let (_, x) = a.get("/v1/ips/198.51.100.9").await;
    assert_eq!(x["verdict"], "drop");
    a.call(
        Method::DELETE,
        "/v1/lists/graylist/198.51.100.0%2F24",
        None,
        None,
    )
    .await;
    assert_eq!(a.state(), before);
    let (_, metrics) = a.get("/metrics").await;
    assert!(metrics.as_str().unwrap().contains("ipguard_monitor_mode 0"));
}

/// A request that finds the controller locked (a fleet resync applies a slice on a blocking
/// thread) waits without holding the runtime thread: on a current-thread runtime, another
/// task keeps running meanwhile, and the request is answered once the lock is free.
#[tokio::test(flavor = "current_thread")]
async fn a_request_waiting_for_the_lock_leaves_the_runtime_free() {
    let a = api();
    let ctl = a.ctl.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _guard = ctl.lock().unwrap();
        held_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    });
    held_rx.recv().unwrap();
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let (s, v) = a.get("/v1/status").await;
    counter.abort();
    holder.join().unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
    // About 30 ticks of 10 ms while the lock was held; a request blocking the thread on
    // the lock would have let none run.
    assert!(
        ticks >= 10,
        "only {ticks} ticks ran while the request waited"
    );
}
