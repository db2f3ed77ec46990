//! The analyst's interfaces on real alerts: a labelled scenario shipped by the real agent
//! to a collector serving its API, with a JSON-lines export and a webhook; then the
//! `alerts` and `fingerprint` commands, feedback that suppresses, and a restart that
//! keeps what the detectors learned.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tapline_e2e::{
    Collector, Scratch, bin, free_port, http_get, http_get_auth, http_request, run_ok,
    ship_scenario,
};

/// A webhook receiver: answers 200 to every POST and passes the bodies on.
fn webhook() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                    if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

#[test]
fn alerts_reach_the_api_the_cli_the_export_and_the_webhook_and_feedback_suppresses() {
    let scratch = Scratch::new("alerts");
    let pcap = scratch.path("scenario.pcap");
    let scenario = tapline_traffic::scenario::gen_scenario(&pcap, 7, 4, 1.0).unwrap();
    let mut c = Collector::init(&scratch.0);
    let bundle = c.enroll("node-a", false);
    let (hook_url, hooks) = webhook();
    let jsonl = scratch.path("alerts.jsonl");
    let config_path = c.data.join("collector.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains("[export]\n"), "{config}");
    let config = config.replace(
        "[export]\n",
        &format!(
            "[export]\njsonl = {:?}\nwebhook = {:?}\n",
            jsonl.display().to_string(),
            hook_url
        ),
    );
    std::fs::write(&config_path, config).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let args = [
        "--api".as_ref(),
        api.as_ref(),
        "--geoip".as_ref(),
        scenario.city_db.as_os_str(),
        "--asn-db".as_ref(),
        scenario.asn_db.as_os_str(),
    ];
    c.start_with(&args);
    ship_scenario(&scratch, &pcap, &bundle);

    // The detectors catch up with the store.
    let start = Instant::now();
    let lag_zero = || {
        let (_, m) = http_get(&api, "/metrics");
        m.lines()
            .any(|l| l.starts_with("tapline_collector_detect_lag_batches 0"))
            && m.lines().any(|l| {
                l.starts_with("tapline_collector_detect_events_total ")
                    && l.split(' ').nth(1) != Some("0")
            })
    };
    while !lag_zero() {
        assert!(start.elapsed() < Duration::from_secs(60), "detectors lag");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The API needs the token `init` wrote: none, a wrong one, or a cookie that is not a
    // session are 401 (and the UI sends a browser to its login page); `/metrics` is open.
    let token = c.api_token();
    assert!(token.starts_with("tpl_"), "{token}");
    for (path, headers) in [
        ("/api/alerts", vec![]),
        ("/api/alerts", vec![("Authorization", "Bearer tpl_wrong")]),
        ("/api/alerts", vec![("Authorization", "Basic dGFwbGluZQ==")]),
        ("/api/agents", vec![("Cookie", "tapline_session=forged")]),
        ("/api/endpoints", vec![]),
        ("/api/actors/sub:alice", vec![]),
    ] {
        let r = http_request(&api, "GET", path, &headers, "");
        assert_eq!(r.status, 401, "{path} {headers:?}: {}", r.body);
        assert!(r.header("www-authenticate").is_some());
        assert!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["error"].is_string());
    }
    let r = http_request(
        &api,
        "POST",
        "/api/alerts/x/resolve",
        &[("Content-Type", "application/json")],
        "{\"false_positive\":true}",
    );
    assert_eq!(r.status, 401);
    let r = http_request(&api, "GET", "/", &[], "");
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    assert_eq!(http_get(&api, "/metrics").0, 200);

    // The API: a page, the next page, one alert, bad input.
    let (status, body) = http_get_auth(&api, "/api/alerts?limit=5&severity=low", &token);
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let total = page["total"].as_u64().unwrap();
    assert!(total >= 20, "{total} alerts");
    assert_eq!(page["alerts"].as_array().unwrap().len(), 5);
    assert_eq!(page["next_offset"], 5);
    let first = &page["alerts"][0];
    for field in [
        "id",
        "type",
        "severity",
        "score",
        "actor",
        "source_ips",
        "endpoint",
        "first_seen_us",
        "last_seen_us",
        "explanation",
        "evidence",
    ] {
        assert!(!first[field].is_null(), "alert lacks {field}: {first}");
    }
    assert!(
        !first["explanation"]["factors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (_, body2) = http_get_auth(&api, "/api/alerts?limit=5&offset=5&severity=low", &token);
    let page2: serde_json::Value = serde_json::from_str(&body2).unwrap();
    assert_ne!(page2["alerts"][0]["id"], first["id"]);
    let id = first["id"].as_str().unwrap();
    let (status, one) = http_get_auth(&api, &format!("/api/alerts/{id}"), &token);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&one).unwrap()["id"],
        id
    );
    assert_eq!(http_get_auth(&api, "/api/alerts/0000", &token).0, 404);
    assert_eq!(
        http_get_auth(&api, "/api/alerts?severity=loud", &token).0,
        400
    );
    let (_, travel) = http_get_auth(&api, "/api/alerts?type=impossible_travel", &token);
    let travel: serde_json::Value = serde_json::from_str(&travel).unwrap();
    assert!(
        travel["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["type"] == "impossible_travel")
    );

    // The export file and the webhook got them too.
    let exported = std::fs::read_to_string(&jsonl).unwrap();
    assert!(exported.lines().count() >= 20, "{exported}");
    let hooked = hooks
        .recv_timeout(Duration::from_secs(20))
        .expect("a webhook call");
    assert!(serde_json::from_str::<serde_json::Value>(&hooked).unwrap()["type"].is_string());

    // The operator holding a leaked key finds its alerts by its fingerprint.
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&scenario.labels_path).unwrap()).unwrap();
    let secret = labels["labels"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|k| k["secret"].as_str())
        .expect("the first attack uses a key")
        .to_string();
    let fp = run_ok(
        Command::new(bin("tapline-collector"))
            .args(["fingerprint", "--data"])
            .arg(&c.data)
            .arg(&secret),
    );
    let fp = fp.trim();
    assert_eq!(fp.len(), 16);
    let listed = run_ok(
        Command::new(bin("tapline-collector"))
            .args(["alerts", "--json", "--limit", "1000", "--data"])
            .arg(&c.data),
    );
    let mine: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["actor"]["key"] == fp)
        .collect();
    assert!(!mine.is_empty(), "no alert on the leaked key {fp}");

    // Feedback: a false positive suppresses its kind for that actor and endpoint.
    let target = &mine[0];
    let target_id = target["id"].as_str().unwrap();
    run_ok(
        Command::new(bin("tapline-collector"))
            .args([
                "alerts",
                "resolve",
                target_id,
                "--false-positive",
                "--reason",
                "load test",
                "--data",
            ])
            .arg(&c.data),
    );
    let sup = run_ok(
        Command::new(bin("tapline-collector"))
            .args(["alerts", "suppressions", "--data"])
            .arg(&c.data),
    );
    assert!(sup.contains(target["actor_id"].as_str().unwrap()), "{sup}");
    assert!(sup.contains("load test"), "{sup}");
    let fps = run_ok(
        Command::new(bin("tapline-collector"))
            .args(["alerts", "--status", "false_positive", "--json", "--data"])
            .arg(&c.data),
    );
    assert!(fps.contains(target_id), "{fps}");

    // A restart keeps what was learned: the detectors resume from their checkpoint.
    c.stop();
    c.start_with(&args);
    let start = Instant::now();
    while !c.log_text().contains("detectors resume after batch") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.stop();
}
