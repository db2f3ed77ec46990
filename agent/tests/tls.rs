//! HTTPS in clear through the OpenSSL uprobes: nginx with a test certificate in a
//! network namespace, curl and python3 clients on the host side, the agent with
//! `--source ebpf --tls` and no interface at all. The namespace, nginx and the agent go
//! away even when the test fails. Needs root, nginx and openssl; without them the test
//! says so loudly and does nothing.

use std::path::Path;
mod common;

use std::process::{Command, Stdio};

use common::{Reaped, TempDir, wait_for};
use std::time::Duration;

use serde_json::Value;
use tapline_traffic::netlab::{Lab, is_root, sh};

/// tracefs mounted for the test when the machine had none (a DaemonSet mounts the
/// host's); unmounted at the end.
struct Tracefs(bool);

impl Tracefs {
    fn ensure() -> Tracefs {
        if Path::new("/sys/kernel/tracing/events").exists() {
            return Tracefs(false);
        }
        Tracefs(sh(&[
            "mount",
            "-t",
            "tracefs",
            "nodev",
            "/sys/kernel/tracing",
        ]))
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.0 {
            sh(&["umount", "/sys/kernel/tracing"]);
        }
    }
}

fn nginx_config(dir: &Path, ip: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {ip}:8443 ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location /v1/ {{
            default_type application/json;
            return 200 '{{"id":"cus_tls","object":"customer"}}';
        }}
        location /big {{
            alias {d}/big.json;
            default_type application/json;
        }}
        location / {{ return 404; }}
    }}
}}
"#
    )
}

#[test]
fn https_plaintext_is_captured_through_openssl_uprobes() {
    if !is_root() || !sh(&["nginx", "-v"]) || !sh(&["openssl", "version"]) {
        eprintln!("\n*** TLS uprobe test SKIPPED: needs root, nginx and openssl ***\n");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tapline-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    assert!(sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=tapline.test",
        "-keyout",
        &dir.join("key.pem").to_string_lossy(),
        "-out",
        &dir.join("cert.pem").to_string_lossy(),
    ]));
    // A body larger than one TLS record (16 KiB): several reads make one response.
    let big: String = format!(
        "[{}]",
        (0..2000)
            .map(|i| format!("{{\"id\":\"inv_{i:05}\",\"amount\":{i}}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    std::fs::write(dir.join("big.json"), &big).unwrap();
    let mut lab = Lab::create();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(&dir, &lab.server_ip)).unwrap();
    lab.spawn_in_ns(&[
        "nginx",
        "-c",
        &conf.to_string_lossy(),
        "-p",
        &dir.to_string_lossy(),
    ]);
    let base = format!("https://{}:8443", lab.server_ip);
    wait_for(15, "nginx", || {
        sh(&[
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "--max-time",
            "1",
            &format!("{base}/v1/up"),
        ])
    });

    let log = dir.join("http.json");
    let err = dir.join("agent.err");
    let _tracefs = Tracefs::ensure();
    // Only the capabilities docs/capture.md lists for --tls, when setpriv is there.
    let least = sh(&["setpriv", "--version"]);
    let mut command = if least {
        let mut c = Command::new("setpriv");
        c.args([
            "--bounding-set",
            "-all,+bpf,+perfmon,+sys_admin,+sys_ptrace",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_tapline-agent"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_tapline-agent"))
    };
    let mut agent = Reaped(
        command
            .args(["run", "--source", "ebpf", "--tls", "--out"])
            .arg(&log)
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(15, "the agent", || {
        std::fs::read_to_string(&err).is_ok_and(|s| s.contains("capturing on"))
    });

    let curl = |args: &[&str]| {
        assert!(
            sh(&[
                &[
                    "curl",
                    "-sk",
                    "--http1.1",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "5"
                ],
                args
            ]
            .concat()),
            "curl {args:?}"
        )
    };
    curl(&[
        "-H",
        "Authorization: Bearer sk_live_tls_secret",
        &format!("{base}/v1/customers/cus_tls?expand=invoices"),
    ]);
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"amount":1200}"#,
        &format!("{base}/v1/charges"),
    ]);
    curl(&[&format!("{base}/big")]);
    // python3's ssl module (SSL_read_ex/SSL_write_ex), keep-alive off.
    let py = format!(
        "import ssl, urllib.request\nctx = ssl._create_unverified_context()\nurllib.request.urlopen('{base}/v1/python/inv_7', context=ctx).read()\n"
    );
    let status = Command::new("/usr/bin/python3")
        .args(["-c", &py])
        .stdout(Stdio::null())
        .status()
        .or_else(|_| Command::new("python3").args(["-c", &py]).status())
        .unwrap();
    assert!(status.success(), "python client");

    std::thread::sleep(Duration::from_millis(500));
    assert!(sh(&["kill", "-TERM", &agent.0.id().to_string()]));
    let status = agent.0.wait().unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "agent exit: {status}: {stderr}");
    let txs: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, String, u64, u64, String)> = txs
        .iter()
        .map(|t| {
            let h = &t["http"];
            (
                h["http_method"].as_str().unwrap_or("").to_string(),
                h["url"].as_str().unwrap_or("").to_string(),
                h["status"].as_u64().unwrap_or(0),
                h["response_body_len"].as_u64().unwrap_or(0),
                format!("{}:{}", t["dest_ip"].as_str().unwrap_or(""), t["dest_port"]),
            )
        })
        .collect();
    got.sort();
    let server = format!("{}:8443", lab.server_ip);
    let mut want = vec![
        (
            "GET".to_string(),
            "/v1/customers/cus_tls?expand=invoices".to_string(),
            200,
            36,
            server.clone(),
        ),
        (
            "POST".to_string(),
            "/v1/charges".to_string(),
            200,
            36,
            server.clone(),
        ),
        (
            "GET".to_string(),
            "/big".to_string(),
            200,
            big.len() as u64,
            server.clone(),
        ),
        (
            "GET".to_string(),
            "/v1/python/inv_7".to_string(),
            200,
            36,
            server.clone(),
        ),
    ];
    want.sort();
    // Both ends use OpenSSL on this node: each connection is logged once.
    assert_eq!(got, want, "agent said: {stderr}");
    // The bearer token is fingerprinted, never logged.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("sk_live_tls_secret"));
    drop(lab);
}
