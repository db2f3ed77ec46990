//! Helpers of the end-to-end tests: the built binaries, a collector process that can be
//! killed and restarted, scratch directories that clean up after themselves.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A binary of the workspace, built by `cargo test` (the agent and collector packages
/// have integration tests, so cargo builds their binaries first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo test --workspace` (or `cargo build --bins` first)",
        p.display()
    );
    p
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("tapline-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs a command to success, returning its standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A collector data directory and, while started, its `serve` process.
pub struct Collector {
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Collector {
    /// `init` a data directory listening on a free loopback port.
    pub fn init(dir: &Path) -> Collector {
        let port = free_port();
        let data = dir.join("collector");
        run_ok(
            Command::new(bin("tapline-collector"))
                .args(["init", "--data"])
                .arg(&data)
                .args(["--listen", &format!("127.0.0.1:{port}")]),
        );
        Collector {
            log: dir.join("collector.log"),
            data,
            port,
            child: None,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Issues a bundle.
    pub fn enroll(&self, name: &str, fleet: bool) -> PathBuf {
        let out = self.data.join(format!("{name}.bundle"));
        let mut cmd = Command::new(bin("tapline-collector"));
        cmd.args(["enroll", "--name", name, "--data"])
            .arg(&self.data)
            .arg("--out")
            .arg(&out);
        if fleet {
            cmd.arg("--fleet");
        }
        run_ok(&mut cmd);
        out
    }

    /// Starts `serve` (its log appended to `self.log`) and waits until it listens.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts `serve` with extra arguments (`--api`, `--geoip`, …).
    pub fn start_with(&mut self, args: &[&std::ffi::OsStr]) {
        assert!(self.child.is_none(), "already started");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(bin("tapline-collector"))
            .args(["serve", "--data"])
            .arg(&self.data)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("collector starts");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(self.addr()).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "collector did not listen: {}",
                self.log_text()
            );
            assert!(self.alive(), "collector exited: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on a child we own.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// `tapline-collector events --count` with extra arguments.
    pub fn count(&self, args: &[&str]) -> u64 {
        run_ok(
            Command::new(bin("tapline-collector"))
                .args(["events", "--count", "--data"])
                .arg(&self.data)
                .args(args),
        )
        .trim()
        .parse()
        .expect("a count")
    }

    pub fn database(&self) -> PathBuf {
        self.data.join("tapline.db")
    }

    /// The web UI's and API's token, as `init` wrote it.
    pub fn api_token(&self) -> String {
        std::fs::read_to_string(self.data.join("api_token"))
            .expect("init writes DATA/api_token")
            .trim()
            .to_string()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it is true or `secs` pass.
/// Ships a scenario capture to the collector of `bundle` as node `node-a`, with the
/// scenario's agent configuration (JWT key, proxies, roles); returns once every batch
/// is acked.
pub fn ship_scenario(scratch: &Scratch, pcap: &Path, bundle: &Path) {
    let agent_config = scratch.path("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "[agent]\nid = \"node-a\"\n{}",
            tapline_traffic::scenario::agent_config()
        ),
    )
    .unwrap();
    run_ok(
        Command::new(bin("tapline-agent"))
            .arg("read")
            .arg(pcap)
            .arg("--config")
            .arg(&agent_config)
            .arg("--ship")
            .arg("--bundle")
            .arg(bundle),
    );
}

pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed when dropped, so a failing test leaves none behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET on loopback: status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let r = http_request(addr, "GET", path, &[], "");
    (r.status, r.body)
}

/// A GET with the API token (`Authorization: Bearer`).
pub fn http_get_auth(addr: &str, path: &str, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let r = http_request(addr, "GET", path, &[("Authorization", &auth)], "");
    (r.status, r.body)
}

/// What an HTTP request got back.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines as sent (`Name: value`).
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    /// The value of a header (first of that name, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A plain HTTP/1.1 request on loopback, the body sent with its length.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("sends");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let out = String::from_utf8_lossy(&raw).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    // Chunked answers (axum's for streamed bodies): joined back together.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    HttpResponse { status, head, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
