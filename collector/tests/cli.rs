//! The collector's enrollment commands, on the real binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn collector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapline-collector"))
}

#[test]
fn init_enroll_revoke() {
    let dir = std::env::temp_dir().join(format!("tapline-collector-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let ok = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    ok(collector()
        .args([
            "init",
            "--listen",
            "127.0.0.1:4999",
            "--advertise",
            "c1:4999",
            "--advertise",
            "c2:4999",
            "--data",
        ])
        .arg(&data));
    let again = collector()
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "a second init does not replace the keys"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    for f in ["ca.key", "server.key", "fingerprint.key"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is private");
    }
    let bundle = dir.join("n1.bundle");
    ok(collector()
        .args(["enroll", "--name", "n1", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&bundle));
    let b =
        tapline_wire::bundle::Bundle::parse(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    assert_eq!(b.name, "n1");
    assert!(!b.fleet);
    assert_eq!(b.collectors, vec!["c1:4999", "c2:4999"]);
    assert!(b.fingerprint_key.starts_with("hex:"));
    assert!(b.key.contains("PRIVATE KEY"));
    assert_eq!(
        std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o077,
        0
    );
    let bad = collector()
        .args(["enroll", "--name", "../etc", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(dir.join("x"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let unknown = collector()
        .args(["revoke", "--name", "nobody", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no agent named"));
    ok(collector()
        .args(["revoke", "--name", "n1", "--data"])
        .arg(&data));
    let reg = std::fs::read_to_string(data.join("agents.json")).unwrap();
    assert!(reg.contains("\"revoked\": true"), "{reg}");
    let none = collector()
        .args(["events", "--count", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&none.stderr).contains("holds no events yet"));
    let _ = std::fs::remove_dir_all(&dir);
}
