//! Conformance against the transactions Suricata and Zeek are tested to produce
//! (`../shared/corpus`, see its SOURCE.md for the matching rules).
//!
//! Every case runs through the same pipeline and EVE writer as `tapline-agent read`.
//! Prints one line per case and `conformance: P/T expectation lines passed`; fails
//! when P is below the floor in `tests/conformance-floor.txt`. Known divergences are
//! explained in `docs/conformance.md`.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;
use sha2::Digest;
use tapline_agent::capture::file::read_frames;
use tapline_agent::output::eve::{EveOptions, write_transaction};
use tapline_agent::pipeline::{Pipeline, PipelineConfig};

/// Runs one pcap and returns the EVE records as JSON values.
fn run_case(pcap: &Path, config: PipelineConfig) -> Vec<Value> {
    let file = fs::File::open(pcap).unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
    let mut p = Pipeline::new(config);
    let mut lines = Vec::new();
    let opts = EveOptions {
        bodies: true,
        redact: None,
    };
    let mut sink = |m: &_, tx: _| {
        let mut buf = Vec::new();
        write_transaction(&mut buf, m, &tx, &opts);
        lines.push(serde_json::from_slice::<Value>(&buf).expect("EVE line is JSON"));
    };
    read_frames(
        file,
        |f| p.frame(f.linktype, f.ts, f.data, &mut sink),
        |_| {},
    )
    .unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
    p.finish(&mut sink);
    lines
}

const TOP_LEVEL: &[&str] = &[
    "src_ip",
    "src_port",
    "dest_ip",
    "dest_port",
    "proto",
    "tx_id",
    "vlan",
    "flow_id",
];

/// Fields Suricata's http logger writes by default (for `_http_exact`).
const SURICATA_HTTP_FIELDS: &[&str] = &[
    "hostname",
    "http_port",
    "url",
    "http_user_agent",
    "http_content_type",
    "http_refer",
    "redirect",
    "http_method",
    "protocol",
    "status",
    "status_string",
    "length",
];

/// Of those, the ones only the `extended` http log writes.
const SURICATA_EXTENDED_FIELDS: &[&str] = &[
    "http_refer",
    "http_method",
    "protocol",
    "status",
    "status_string",
    "redirect",
    "length",
];

fn get_path(tx: &Value, key: &str) -> Option<Value> {
    let root = if TOP_LEVEL.contains(&key.split(['[', '.']).next().unwrap_or("")) {
        tx
    } else {
        tx.get("http")?
    };
    // Suricata path syntax: headers[3].name, headers.__len
    if let Some((name, rest)) = key.split_once('[') {
        let (idx, field) = rest.split_once("].")?;
        let arr = root.get(name)?.as_array()?;
        return arr.get(idx.parse::<usize>().ok()?)?.get(field).cloned();
    }
    if let Some(name) = key.strip_suffix(".__len") {
        return Some(Value::from(root.get(name)?.as_array()?.len()));
    }
    root.get(key).cloned()
}

fn body(tx: &Value, which: &str) -> Vec<u8> {
    tx["http"]
        .get(which)
        .and_then(Value::as_str)
        .map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

fn header_block(tx: &Value, which: &str) -> String {
    let mut s = String::new();
    if let Some(hs) = tx["http"].get(which).and_then(Value::as_array) {
        for h in hs {
            s.push_str(h["name"].as_str().unwrap_or(""));
            s.push_str(": ");
            s.push_str(h["value"].as_str().unwrap_or(""));
            s.push_str("\r\n");
        }
    }
    s
}

/// Whether `hay` holds the needle, or every needle of a list.
fn contains(hay: &[u8], needle: &Value, nocase: bool) -> bool {
    match needle {
        Value::String(n) => contains_one(hay, n, nocase),
        Value::Array(all) => all
            .iter()
            .all(|n| n.as_str().is_some_and(|n| contains_one(hay, n, nocase))),
        _ => false,
    }
}

fn contains_one(hay: &[u8], needle: &str, nocase: bool) -> bool {
    let n = needle.as_bytes();
    if n.is_empty() {
        return true;
    }
    hay.windows(n.len()).any(|w| {
        if nocase {
            w.eq_ignore_ascii_case(n)
        } else {
            w == n
        }
    })
}

fn header_value(tx: &Value, which: &str, name: &str) -> Option<String> {
    tx["http"].get(which)?.as_array()?.iter().find_map(|h| {
        h["name"]
            .as_str()?
            .eq_ignore_ascii_case(name)
            .then(|| h["value"].as_str().unwrap_or("").to_string())
    })
}

/// A file as Suricata's fileinfo sees one: a non-empty body of a transaction.
struct FileView {
    filename: String,
    size: u64,
    complete: bool,
    gaps: bool,
    sha256: String,
}

fn files_of(tx: &Value) -> Vec<FileView> {
    let mut out = Vec::new();
    let anomalies: Vec<&str> = tx["http"]["anomalies"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let gaps = anomalies.contains(&"body_gap");
    let truncated = anomalies.contains(&"truncated_body") || gaps;
    let url = tx["http"]["url"].as_str().unwrap_or("");
    for (len_key, gap_key, body_key, hdrs) in [
        (
            "request_body_len",
            "request_body_gap_bytes",
            "http_request_body",
            "request_headers",
        ),
        (
            "response_body_len",
            "response_body_gap_bytes",
            "http_response_body",
            "response_headers",
        ),
    ] {
        // Suricata counts bytes lost in gaps in a file's size.
        let size =
            tx["http"][len_key].as_u64().unwrap_or(0) + tx["http"][gap_key].as_u64().unwrap_or(0);
        if size == 0 {
            continue;
        }
        let b = body(tx, body_key);
        let filename = header_value(tx, hdrs, "content-disposition")
            .and_then(|cd| {
                let i = cd.to_ascii_lowercase().find("filename=")?;
                Some(
                    cd[i + 9..]
                        .trim_matches(|c| c == '"' || c == ' ' || c == ';')
                        .to_string(),
                )
            })
            .unwrap_or_else(|| url.split('?').next().unwrap_or("").to_string());
        out.push(FileView {
            filename,
            size,
            complete: !truncated,
            gaps,
            sha256: hex(&sha2::Sha256::digest(&b)),
        });
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn file_matches(f: &FileView, want: &serde_json::Map<String, Value>) -> bool {
    want.iter().all(|(k, v)| match k.as_str() {
        "filename" => v.as_str() == Some(f.filename.as_str()),
        "size" => v.as_u64() == Some(f.size),
        "state" => v.as_str() == Some(if f.complete { "CLOSED" } else { "TRUNCATED" }),
        "gaps" => v.as_bool() == Some(f.gaps),
        "sha256" => v.as_str() == Some(f.sha256.as_str()),
        // Storage and per-packet addressing are Suricata internals.
        _ => true,
    })
}

/// Whether one EVE record satisfies a Suricata expectation line (without `_file`).
fn suricata_tx_matches(tx: &Value, line: &serde_json::Map<String, Value>) -> bool {
    let nocase = line
        .get("_nocase")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for (k, v) in line {
        let ok = match k.as_str() {
            "_request_body_contains" => contains(&body(tx, "http_request_body"), v, nocase),
            "_response_body_contains" => contains(&body(tx, "http_response_body"), v, nocase),
            "_request_headers_contain" => {
                contains(header_block(tx, "request_headers").as_bytes(), v, nocase)
            }
            "_response_headers_contain" => {
                contains(header_block(tx, "response_headers").as_bytes(), v, nocase)
            }
            "url__contains" => contains(
                tx["http"]["url"].as_str().unwrap_or("").as_bytes(),
                v,
                nocase,
            ),
            k if k.starts_with('_') => true,
            k => get_path(tx, k).as_ref() == Some(v),
        };
        if !ok {
            return false;
        }
    }
    if line.get("_http_exact").and_then(Value::as_bool) == Some(true) {
        // Without any of the extended fields the test ran Suricata's basic http log.
        let extended = SURICATA_EXTENDED_FIELDS
            .iter()
            .any(|k| line.contains_key(*k));
        if let Some(http) = tx["http"].as_object() {
            for k in http.keys() {
                let logged = SURICATA_HTTP_FIELDS.contains(&k.as_str())
                    && (extended || !SURICATA_EXTENDED_FIELDS.contains(&k.as_str()));
                if logged && !line.contains_key(k) {
                    return false;
                }
            }
        }
    }
    true
}

fn suricata_line_passes(txs: &[Value], line: &serde_json::Map<String, Value>) -> (bool, usize) {
    let n = if let Some(want) = line.get("_file").and_then(Value::as_object) {
        txs.iter()
            .filter(|t| suricata_tx_matches(t, line))
            .map(|t| files_of(t).iter().filter(|f| file_matches(f, want)).count())
            .sum()
    } else if line.get("_src").and_then(Value::as_str) == Some("fileinfo") {
        txs.iter()
            .filter(|t| suricata_tx_matches(t, line))
            .map(|t| files_of(t).len())
            .sum()
    } else {
        txs.iter().filter(|t| suricata_tx_matches(t, line)).count()
    };
    let ok = if let Some(c) = line.get("_count").and_then(Value::as_u64) {
        n as u64 == c
    } else if let Some(c) = line.get("_min_count").and_then(Value::as_u64) {
        n as u64 >= c
    } else {
        n >= 1
    };
    (ok, n)
}

/// A bare-body reply to a request without version.
fn http09_reply(tx: &Value) -> bool {
    let http = &tx["http"];
    http.get("http_method").is_some()
        && http.get("protocol").is_none()
        && http.get("response_protocol").is_none()
        && http["anomalies"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "response_not_status_line"))
}

/// The value of a Zeek http.log column computed from an EVE record.
fn zeek_field(tx: &Value, col: &str) -> Value {
    let http = &tx["http"];
    let s = |k: &str| http.get(k).cloned().unwrap_or(Value::Null);
    let strip_http = |v: Option<&str>| {
        v.map(|p| Value::from(p.get(5..).unwrap_or("").to_string()))
            .unwrap_or(Value::Null)
    };
    match col {
        "id.orig_h" => tx["src_ip"].clone(),
        "id.orig_p" => tx["src_port"].clone(),
        "id.resp_h" => tx["dest_ip"].clone(),
        "id.resp_p" => tx["dest_port"].clone(),
        "trans_depth" => Value::from(tx["tx_id"].as_u64().unwrap_or(0) + 1),
        "method" => s("http_method"),
        "host" => header_value(tx, "request_headers", "host").map_or(Value::Null, Value::from),
        // Zeek logs the URI with its %XX escapes decoded (invalid ones kept).
        "uri" => http
            .get("url")
            .and_then(Value::as_str)
            .map_or(Value::Null, |u| Value::from(percent_decode(u))),
        "referrer" => s("http_refer"),
        // Zeek takes the version from the reply; an HTTP/0.9 reply is "0.9".
        "version" => match http.get("response_protocol").and_then(Value::as_str) {
            Some(v) => strip_http(Some(v)),
            None if http09_reply(tx) => Value::from("0.9"),
            None => Value::Null,
        },
        "user_agent" => s("http_user_agent"),
        "origin" => header_value(tx, "request_headers", "origin").map_or(Value::Null, Value::from),
        "request_body_len" => s("request_body_len"),
        "response_body_len" => s("response_body_len"),
        "status_code" if http09_reply(tx) => Value::from(0),
        "status_msg" if http09_reply(tx) => Value::from("<empty>"),
        "status_code" => s("status"),
        // A status line without a reason phrase is logged as "<empty>".
        "status_msg" if http.get("status_msg") == Some(&Value::from("")) => Value::from("<empty>"),
        "status_msg" => s("status_msg"),
        // Zeek reports a 101 final answer as informational too.
        "info_code" if http.get("status") == Some(&Value::from(101)) => s("status"),
        "info_msg" if http.get("status") == Some(&Value::from(101)) => s("status_msg"),
        "info_code" => s("info_code"),
        "info_msg" => s("info_msg"),
        "tags" => Value::Array(vec![]),
        "username" => header_value(tx, "request_headers", "authorization")
            .and_then(|a| {
                let b = a.strip_prefix("Basic ")?;
                let d = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()?;
                let d = String::from_utf8_lossy(&d).to_string();
                Some(Value::from(d.split(':').next().unwrap_or("").to_string()))
            })
            .unwrap_or(Value::Null),
        "password" => Value::Null,
        "proxied" => {
            const PROXY: &[&str] = &[
                "FORWARDED",
                "X-FORWARDED-FOR",
                "X-FORWARDED-FROM",
                "CLIENT-IP",
                "VIA",
                "XROXY-CONNECTION",
                "PROXY-CONNECTION",
            ];
            let mut v: Vec<Value> = http["request_headers"]
                .as_array()
                .map(|hs| {
                    hs.iter()
                        .filter_map(|h| {
                            let n = h["name"].as_str()?.to_ascii_uppercase();
                            PROXY.contains(&n.as_str()).then(|| {
                                Value::from(format!("{n} -> {}", h["value"].as_str().unwrap_or("")))
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            if v.is_empty() {
                Value::Null
            } else {
                v.sort_by_key(|x| x.to_string());
                Value::Array(v)
            }
        }
        _ => Value::Null,
    }
}

/// Decodes every `marker` followed by two hex digits into the byte they name; anything
/// else is kept as it is.
fn decode_hex_escapes(s: &str, marker: &[u8]) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let m = marker.len();
        if b[i..].starts_with(marker)
            && let (Some(&h), Some(&l)) = (b.get(i + m), b.get(i + m + 1))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push(h << 4 | l);
            i += m + 2;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// `%XX` escapes of a URI.
fn percent_decode(s: &str) -> String {
    decode_hex_escapes(s, b"%")
}

/// Zeek's ASCII-log escapes, `\xNN`.
fn zeek_unescape(s: &str) -> String {
    decode_hex_escapes(s, b"\\x")
}

fn zeek_tx_matches(tx: &Value, line: &serde_json::Map<String, Value>) -> bool {
    let escaped = line.get("_zeek_escaped").and_then(Value::as_bool) == Some(true);
    line.iter().all(|(k, want)| {
        if k.starts_with('_') {
            return true;
        }
        let got = zeek_field(tx, k);
        if let (Value::Array(w), Value::Array(g)) = (want, &got) {
            let mut w = w.clone();
            w.sort_by_key(|x| x.to_string());
            return &w == g;
        }
        if escaped && let Value::String(w) = want {
            return got.as_str() == Some(zeek_unescape(w).as_str());
        }
        &got == want
    })
}

struct Outcome {
    passed: usize,
    total: usize,
    failures: Vec<String>,
}

fn suricata_case(dir: &Path) -> Outcome {
    let checks = fs::read_to_string(dir.join("checks.yaml")).unwrap_or_default();
    let y: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&checks).unwrap_or(serde_yaml_ng::Value::Null);
    let args: Vec<String> = y["suricata_args"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let args = args.join(" ");
    let mut config = PipelineConfig::default();
    config.flows.midstream = args.contains("stream.midstream=true");
    if args.contains("vlan.use-for-tracking=false") {
        config.flows.use_vlan = false;
    }
    config.http.body.capture_limit = 16 << 20;
    let pcap = find_pcap(dir);
    let txs = run_case(&pcap, config);
    let mut o = Outcome {
        passed: 0,
        total: 0,
        failures: Vec::new(),
    };
    for (i, l) in fs::read_to_string(dir.join("expected.jsonl"))
        .unwrap_or_default()
        .lines()
        .enumerate()
    {
        let Ok(Value::Object(line)) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        o.total += 1;
        let (ok, n) = suricata_line_passes(&txs, &line);
        if ok {
            o.passed += 1;
        } else {
            o.failures
                .push(format!("line {} (matched {n}): {l}", i + 1));
        }
    }
    o
}

fn zeek_case(dir: &Path) -> Outcome {
    let mut config = PipelineConfig::default();
    config.flows.midstream = true;
    config.http.body.capture_limit = 0;
    let pcap = find_pcap(dir);
    let txs = run_case(&pcap, config);
    let mut o = Outcome {
        passed: 0,
        total: 0,
        failures: Vec::new(),
    };
    let mut conn_flow: HashMap<u64, Value> = HashMap::new();
    let mut used = vec![false; txs.len()];
    for (i, l) in fs::read_to_string(dir.join("expected.jsonl"))
        .unwrap_or_default()
        .lines()
        .enumerate()
    {
        let Ok(Value::Object(line)) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        o.total += 1;
        let conn = line.get("_conn").and_then(Value::as_u64);
        let found = txs.iter().enumerate().position(|(j, t)| {
            !used[j]
                && zeek_tx_matches(t, &line)
                && conn.is_none_or(|c| conn_flow.get(&c).is_none_or(|f| f == &t["flow_id"]))
        });
        match found {
            Some(j) => {
                used[j] = true;
                if let Some(c) = conn {
                    conn_flow.insert(c, txs[j]["flow_id"].clone());
                }
                o.passed += 1;
            }
            None => o.failures.push(format!("row {}: {l}", i + 1)),
        }
    }
    o
}

fn find_pcap(dir: &Path) -> PathBuf {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.sort();
    entries
        .into_iter()
        .find(|p| common::is_capture(p))
        .unwrap_or_else(|| panic!("no pcap in {}", dir.display()))
}

fn cases(suite: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(suite)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn conformance() {
    let Some(corpus) = common::corpus_dir() else {
        eprintln!(
            "\n*** conformance SKIPPED: ../shared/corpus not found (set TAPLINE_CORPUS) ***\n"
        );
        return;
    };
    let only = std::env::var("CONFORMANCE_CASE").ok();
    let verbose = std::env::var("CONFORMANCE_VERBOSE").is_ok();
    let (mut passed, mut total) = (0, 0);
    let mut report = String::new();
    for (suite, run) in [
        ("suricata-verify", suricata_case as fn(&Path) -> Outcome),
        ("zeek", zeek_case as fn(&Path) -> Outcome),
    ] {
        for dir in cases(&corpus.join(suite)) {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let o = run(&dir);
            passed += o.passed;
            total += o.total;
            let mark = if o.passed == o.total { "ok  " } else { "FAIL" };
            report.push_str(&format!("{mark} {suite}/{name} {}/{}\n", o.passed, o.total));
            if o.passed != o.total && (verbose || only.is_some()) {
                for f in &o.failures {
                    report.push_str(&format!("       {f}\n"));
                }
                if only.is_some() {
                    let txs = run_case(&find_pcap(&dir), PipelineConfig::default());
                    for t in txs {
                        report.push_str(&format!("       got: {t}\n"));
                    }
                }
            }
        }
    }
    println!("{report}");
    println!("conformance: {passed}/{total} expectation lines passed");
    if only.is_some() {
        return;
    }
    let floor: usize = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-floor.txt"),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0);
    assert!(
        passed >= floor,
        "conformance fell below the recorded floor: {passed} < {floor}"
    );
}
