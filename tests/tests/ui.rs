//! The analyst's web UI in a real browser: a labelled scenario shipped by the real agent
//! to a collector serving its UI, then the JSON endpoints the pages use, then Debian's
//! chromium (headless, driven by playwright-core, see tests/ui/browser.cjs) through
//! login, the alert list, an alert's chart and feedback, the actor, the endpoints and
//! the agents. Skipped with a loud message when chromium or playwright-core is missing
//! (`bash .ci/setup` installs both), except under CI, where that fails.
//!
//! `TAPLINE_SCREENSHOTS=DIR` keeps a PNG of each page there (`cargo xtask screenshots`
//! writes docs/ui/).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapline_e2e::{
    Collector, Reaped, Scratch, bin, free_port, http_get, http_get_auth, http_request, run_ok,
    ship_scenario, wait_for,
};

/// The pinned playwright-core that .ci/setup installs under target/.
const PLAYWRIGHT_VERSION: &str = "1.65.1";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// What the browser part needs, or why it cannot run.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (apt-get install chromium, or run `bash .ci/setup`)",
            chromium.display()
        ));
    }
    let pw = target_dir().join("ui-test/node_modules/playwright-core");
    if !pw.join("package.json").exists() {
        return Err(format!(
            "{} is missing (`bash .ci/setup` installs playwright-core@{PLAYWRIGHT_VERSION} there)",
            pw.display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is missing (apt-get install nodejs)".into());
    }
    Ok((chromium, pw))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn the_ui_shows_the_attacks_charts_an_alert_and_takes_feedback_in_a_real_browser() {
    let tools = browser_tools();
    if let Err(why) = &tools {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("TAPLINE_SCREENSHOTS").is_none(),
            "CI and `cargo xtask screenshots` must run the browser test: {why}"
        );
        eprintln!("\n!!! SKIPPING the browser part of the UI test: {why} !!!\n");
    }
    let scratch = Scratch::new("ui");
    let pcap = scratch.path("scenario.pcap");
    let scenario = tapline_traffic::scenario::gen_scenario(&pcap, 7, 4, 1.0).unwrap();
    let mut c = Collector::init(&scratch.0);
    let bundle = c.enroll("node-a", false);
    let api = format!("127.0.0.1:{}", free_port());
    c.start_with(&[
        "--api".as_ref(),
        api.as_ref(),
        "--geoip".as_ref(),
        scenario.city_db.as_os_str(),
        "--asn-db".as_ref(),
        scenario.asn_db.as_os_str(),
    ]);
    let token = c.api_token();

    // As root, a live agent on loopback watches the shipping (TLS, so flows and no
    // HTTP): its capture coverage is what the agents page shows beside the file reader.
    let live = (unsafe { libc::geteuid() } == 0).then(|| {
        let live_bundle = c.enroll("node-live", false);
        Reaped(
            Command::new(bin("tapline-agent"))
                .args(["run", "--iface", "lo", "--filter"])
                .arg(format!("tcp port {}", c.port))
                .arg("--ship")
                .arg("--bundle")
                .arg(&live_bundle)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("agent runs"),
        )
    });
    if live.is_some() {
        // Let it open the interface before the traffic it should see.
        std::thread::sleep(Duration::from_millis(500));
    }

    ship_scenario(&scratch, &pcap, &bundle);
    let start = Instant::now();
    loop {
        let (_, m) = http_get(&api, "/metrics");
        if m.lines()
            .any(|l| l.starts_with("tapline_collector_detect_lag_batches 0"))
            && m.lines().any(|l| {
                l.starts_with("tapline_collector_detect_events_total ")
                    && l.split(' ').nth(1) != Some("0")
            })
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "detectors lag");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The JSON the pages read. An actor of an alert: its view and its chart.
    let get = |path: &str| {
        let (status, body) = http_get_auth(&api, path, &token);
        assert_eq!(status, 200, "{path}: {body}");
        json(&body)
    };
    let spikes = get("/api/alerts?type=rate_spike&limit=5");
    let spike = &spikes["alerts"][0];
    assert!(spike.is_object(), "no rate_spike alert: {spikes}");
    let key = spike["actor"]["key"].as_str().unwrap().to_string();
    let enc = key.replace(':', "%3A");
    let actor = get(&format!("/api/actors/{enc}"));
    assert!(actor["activity"]["events"].as_u64().unwrap() > 0, "{actor}");
    for list in ["identities", "addresses", "days", "endpoints"] {
        assert!(
            !actor["activity"][list].as_array().unwrap().is_empty(),
            "actor {key} has no {list}: {actor}"
        );
    }
    assert!(!actor["risk"].as_array().unwrap().is_empty());
    assert!(
        actor["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == spike["id"])
    );
    let around = spike["first_seen_us"].as_i64().unwrap() / 1_000_000;
    let act = get(&format!("/api/actors/{enc}/activity?around={around}"));
    let points = act["points"].as_array().unwrap();
    assert_eq!(points.len(), 48, "{act}");
    assert!(points.iter().any(|p| p["count"].as_u64().unwrap() > 0));
    assert!(act["baseline_days"].as_u64().unwrap() > 0, "{act}");
    // The spike stands above its band somewhere near the alert.
    assert!(
        points.iter().any(|p| p["high"]
            .as_f64()
            .is_some_and(|h| p["count"].as_f64().unwrap() > h)),
        "no bucket above the band: {act}"
    );
    let minutes = get(&format!(
        "/api/actors/{enc}/activity?around={around}&step=minute&hours=2"
    ));
    assert_eq!(minutes["points"].as_array().unwrap().len(), 120);
    // The inventory is written a few seconds after the traffic stops.
    wait_for(20, "the endpoint inventory", || {
        get("/api/endpoints?limit=5")["total"].as_u64() > Some(5)
    });
    let endpoints = get("/api/endpoints?limit=5");
    assert_eq!(endpoints["endpoints"].as_array().unwrap().len(), 5);
    assert!(endpoints["total"].as_u64().unwrap() > 5);
    let e = &endpoints["endpoints"][0];
    assert!(e["sensitivity"].as_f64().unwrap() > 0.0 && e["events"].as_u64().unwrap() > 0);
    let agents = get("/api/agents");
    assert!(
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "node-a")
    );

    // Bad input is a 4xx with a JSON reason, never a crash.
    for (method, path, body, want) in [
        ("GET", "/api/actors/x/activity", "", 400),
        (
            "GET",
            "/api/actors/x/activity?around=yesterday-ish",
            "",
            400,
        ),
        (
            "GET",
            "/api/actors/x/activity?around=0&hours=100000",
            "",
            400,
        ),
        (
            "GET",
            "/api/actors/x/activity?around=0&step=second",
            "",
            400,
        ),
        ("GET", "/api/actors/nobody-at-all", "", 404),
        ("GET", "/api/endpoints?sort=sideways", "", 400),
        ("GET", "/api/endpoints?limit=many", "", 400),
        ("GET", "/api/alerts?colour=red", "", 400),
        (
            "POST",
            "/api/alerts/nope/resolve",
            "{\"false_positive\":true}",
            404,
        ),
        (
            "POST",
            "/api/alerts/nope/resolve",
            "{\"false_positive\":3}",
            422,
        ),
        ("POST", "/api/alerts/nope/resolve", "not json", 400),
        ("POST", "/api/alerts/nope/resolve", "{\"fp\":true}", 422),
        ("GET", "/api/nothing-here", "", 404),
        ("GET", "/api/alerts/x/resolve", "", 405),
        ("GET", "/api/actors/%FF%FE", "", 400),
        (
            "GET",
            "/api/actors/x/activity?around=-9223372036854775808",
            "",
            400,
        ),
        ("GET", "/api/actors/x/activity?around=99999999999y", "", 400),
    ] {
        let auth = format!("Bearer {token}");
        let r = http_request(
            &api,
            method,
            path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body,
        );
        assert_eq!(r.status, want, "{method} {path} {body}: {}", r.body);
        assert!(json(&r.body)["error"].is_string(), "{}", r.body);
    }
    // Hostile times are answered, never a server error.
    for path in [
        "/api/alerts?since=99999999999y",
        "/api/alerts?since=-9223372036854775808",
        "/api/actors/x?since=9223372036854775807&until=-1",
        "/api/actors/x/activity?around=4294967295&hours=336",
    ] {
        let (status, body) = http_get_auth(&api, path, &token);
        assert!((200..500).contains(&status), "{path}: {status} {body}");
        json(&body);
    }
    // Resolve through the API: resolved, no suppression.
    let other = &spikes["alerts"][1];
    if other.is_object() {
        let auth = format!("Bearer {token}");
        let r = http_request(
            &api,
            "POST",
            &format!("/api/alerts/{}/resolve", other["id"].as_str().unwrap()),
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            "{\"false_positive\":false}",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = json(&r.body);
        assert_eq!(v["alert"]["status"], "resolved");
        assert!(v["suppression"].is_null());
    }
    // A browser session may not write with a form (cross-site requests cannot send JSON).
    let login = http_request(
        &api,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("token={token}"),
    );
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = login.header("set-cookie").unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let session = cookie.split(';').next().unwrap().to_string();
    assert!(!session.contains(&token), "the cookie carries the token");
    let r = http_request(
        &api,
        "POST",
        "/api/alerts/nope/resolve",
        &[
            ("Cookie", session.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "false_positive=true",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http_request(&api, "GET", "/api/agents", &[("Cookie", &session)], "");
    assert_eq!(r.status, 200, "{}", r.body);

    if live.is_some() {
        wait_for(40, "the live agent's coverage", || {
            let (_, body) = http_get_auth(&api, "/api/agents", &token);
            json(&body)["agents"].as_array().unwrap().iter().any(|a| {
                a["name"] == "node-live"
                    && a["coverage"]["source"] == "pcap"
                    && a["coverage"]["packets"].as_u64().unwrap_or(0) > 0
            })
        });
    }

    let Ok((chromium, playwright)) = tools else {
        return;
    };
    // The attack types the scenario injected (not its benign traps).
    let labels = json(&std::fs::read_to_string(&scenario.labels_path).unwrap());
    let mut types: Vec<String> = labels["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["trap"] == false)
        .map(|l| l["type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    types.dedup();
    let shots = std::env::var_os("TAPLINE_SCREENSHOTS").map(PathBuf::from);
    if let Some(d) = &shots {
        std::fs::create_dir_all(d).unwrap();
    }
    let out = Command::new("node")
        .arg(workspace().join("tests/ui/browser.cjs"))
        .env("TAPLINE_PLAYWRIGHT", &playwright)
        .env("CHROMIUM", &chromium)
        .env("TAPLINE_URL", format!("http://{api}/"))
        .env("TAPLINE_TOKEN", &token)
        .env("TAPLINE_EXPECT_TYPES", types.join(","))
        .env("TAPLINE_SCREENSHOTS", shots.clone().unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{stdout}\ncollector log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log_text()
    );
    let seen = json(stdout.lines().last().unwrap_or("{}"));
    eprintln!("browser saw: {seen}");
    for t in &types {
        assert!(seen["types"][t].as_u64().unwrap_or(0) > 0, "{t}: {seen}");
    }
    assert!(seen["chart"]["nonzero"].as_u64().unwrap() > 0);
    assert_eq!(seen["status_after_reload"], "false_positive");
    // The browser's decision is the store's: the alert is a false positive, with its
    // suppression, as the CLI tells.
    let id = seen["alert"].as_str().unwrap();
    let shown = run_ok(
        Command::new(bin("tapline-collector"))
            .args(["alerts", "show", id, "--json", "--data"])
            .arg(&c.data),
    );
    assert_eq!(json(&shown)["status"], "false_positive");
    let sup = run_ok(
        Command::new(bin("tapline-collector"))
            .args(["alerts", "suppressions", "--data"])
            .arg(&c.data),
    );
    assert!(sup.contains(id), "{sup}");
    let agents = seen["pages"]["agents"].as_array().unwrap();
    assert!(agents.iter().any(|a| a["name"] == "node-a"));
    if live.is_some() {
        let l = agents.iter().find(|a| a["name"] == "node-live").unwrap();
        assert!(l["cells"][2].as_str().unwrap().contains("pcap"), "{l}");
    }
    drop(live);
    c.stop();
}
