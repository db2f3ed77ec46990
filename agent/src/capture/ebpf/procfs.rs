//! What the TLS probes need from /proc: the OpenSSL libraries processes have mapped
//! (each distinct file is probed once, wherever it lives — a container's library is
//! reached through `/proc/PID/root`), and the addresses of a process's socket.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Library file names whose `SSL_read`/`SSL_write` are probed.
pub fn is_openssl(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libssl.so.3")
}

/// Paths where distributions install libssl: probed at start, so processes that start
/// later are covered from their first call.
pub const WELL_KNOWN: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
    "/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib64/libssl.so.3",
    "/usr/lib/libssl.so.3",
    "/lib/libssl.so.3",
];

/// A library file, by device and inode (the same file under two paths is one).
pub type FileId = (u64, u64);

pub fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Finds the OpenSSL libraries mapped by running processes and not yet in `known`
/// (a path to each, through the process's root so it opens from here), and the
/// processes that map one.
pub fn scan_libraries(proc: &Path, known: &HashSet<FileId>) -> (Vec<(FileId, PathBuf)>, Vec<u32>) {
    let mut found = Vec::new();
    let mut pids = Vec::new();
    let mut seen: HashSet<FileId> = HashSet::new();
    let Ok(dir) = std::fs::read_dir(proc) else {
        return (found, pids);
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(proc.join(pid).join("maps")) else {
            continue;
        };
        for line in maps.lines() {
            // address perms offset dev inode path
            let Some(path) = line.split_whitespace().nth(5) else {
                continue;
            };
            if !is_openssl(path) || !path.starts_with('/') {
                continue;
            }
            if let Ok(p) = pid.parse::<u32>()
                && pids.last() != Some(&p)
            {
                pids.push(p);
            }
            let through_root = proc.join(pid).join("root").join(&path[1..]);
            let Some(id) = file_id(&through_root) else {
                continue;
            };
            if known.contains(&id) || !seen.insert(id) {
                continue;
            }
            found.push((id, through_root));
        }
    }
    (found, pids)
}

/// The (local, remote) addresses of socket `fd` of process `pid`, from its network
/// namespace's TCP tables.
pub fn socket_addresses(proc: &Path, pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
    let link =
        std::fs::read_link(proc.join(pid.to_string()).join("fd").join(fd.to_string())).ok()?;
    let link = link.to_str()?;
    let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    for table in ["tcp", "tcp6"] {
        let text =
            std::fs::read_to_string(proc.join(pid.to_string()).join("net").join(table)).ok()?;
        if let Some(found) = find_inode(&text, inode) {
            return Some(found);
        }
    }
    None
}

/// Looks a socket inode up in a `/proc/net/tcp{,6}` table.
pub fn find_inode(table: &str, inode: &str) -> Option<(SocketAddr, SocketAddr)> {
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(9) != Some(&inode) {
            continue;
        }
        return Some((parse_addr(f.get(1)?)?, parse_addr(f.get(2)?)?));
    }
    None
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6), each 32-bit word in host order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| {
            ip.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
        })
        .collect::<Option<_>>()?;
    let ip = match words.len() {
        1 => IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes())),
        4 => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_tables_are_read_like_the_kernel_writes_them() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(
            find_inode(v4, "4242"),
            Some((
                "127.0.0.1:8080".parse().unwrap(),
                "127.0.0.1:50000".parse().unwrap()
            ))
        );
        assert_eq!(find_inode(v4, "1"), None);
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 0000000000000000FFFF00000100007F:01BB 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
        let (l, r) = find_inode(v6, "77").unwrap();
        assert_eq!(l, "127.0.0.1:443".parse().unwrap());
        assert_eq!(r, "[::1]:50000".parse().unwrap());
        assert_eq!(parse_addr("zz:1"), None);
        assert_eq!(parse_addr("0100007F"), None);
    }

    #[test]
    fn this_process_socket_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        use std::os::fd::AsRawFd;
        let (local, remote) =
            socket_addresses(Path::new("/proc"), std::process::id(), client.as_raw_fd()).unwrap();
        assert_eq!(remote, addr);
        assert_eq!(local, client.local_addr().unwrap());
        assert!(is_openssl("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(!is_openssl("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"));
    }
}
