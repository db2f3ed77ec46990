//! Network labs for real-capture tests and benchmarks: a network namespace holding a
//! server, joined to the host by a veth pair. Everything is removed when the [`Lab`] is
//! dropped, even when a test fails.

use std::process::{Child, Command, Stdio};

pub fn sh(cmd: &[&str]) -> bool {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A namespace with a veth pair; everything goes away on drop.
pub struct Lab {
    pub ns: String,
    /// The host end of the veth pair: capture here.
    pub host_if: String,
    pub server_ip: String,
    children: Vec<Child>,
}

impl Lab {
    pub fn create() -> Lab {
        let id = std::process::id();
        let ns = format!("tlsrv{id}");
        let host_if = format!("tlh{}", id % 100_000);
        let peer_if = format!("tln{}", id % 100_000);
        let net = 10 + id % 240;
        let lab = Lab {
            ns: ns.clone(),
            host_if: host_if.clone(),
            server_ip: format!("10.213.{net}.2"),
            children: Vec::new(),
        };
        let host_ip = format!("10.213.{net}.1/24");
        let peer_ip = format!("{}/24", lab.server_ip);
        for cmd in [
            vec!["ip", "netns", "add", &ns],
            vec![
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ],
            vec!["ip", "link", "set", &peer_if, "netns", &ns],
            vec!["ip", "addr", "add", &host_ip, "dev", &host_if],
            vec!["ip", "link", "set", &host_if, "up"],
            vec!["ip", "-n", &ns, "addr", "add", &peer_ip, "dev", &peer_if],
            vec!["ip", "-n", &ns, "link", "set", &peer_if, "up"],
            vec!["ip", "-n", &ns, "link", "set", "lo", "up"],
        ] {
            assert!(sh(&cmd), "setting up the lab failed at {cmd:?}");
        }
        lab
    }

    /// Starts a process inside the namespace; it is killed when the lab goes.
    pub fn spawn_in_ns(&mut self, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Starts the test HTTP server `script` (python3, serving `/health`) in the namespace
    /// on `port` and waits until it answers; returns its base URL.
    pub fn serve_http(&mut self, script: &std::path::Path, port: u16) -> String {
        let ip = self.server_ip.clone();
        let port = port.to_string();
        self.spawn_in_ns(&["python3", &script.to_string_lossy(), &ip, &port]);
        let base = format!("http://{ip}:{port}");
        let health = format!("{base}/health");
        let start = std::time::Instant::now();
        while !sh(&["curl", "-s", "-o", "/dev/null", "--max-time", "1", &health]) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the test server at {base} did not answer"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        base
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting the namespace removes the veth pair with it.
        sh(&["ip", "netns", "del", &self.ns]);
        sh(&["ip", "link", "del", &self.host_if]);
    }
}
