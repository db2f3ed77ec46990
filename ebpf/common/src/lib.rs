//! What the kernel-side programs (`tapline-ebpf`) and the agent exchange: the records
//! they write to the ring buffers, the settings the agent puts in a map before attaching,
//! and the indexes of the per-CPU counters. `#[repr(C)]` and fixed-size, so both sides
//! agree on the layout without a serialization step in the kernel.
#![no_std]

/// A TCP segment seen by the tc or cgroup programs.
pub const KIND_PACKET: u8 = 1;
/// Plaintext read or written through OpenSSL.
pub const KIND_TLS: u8 = 2;
/// A socket accepted or connected by a process that uses OpenSSL.
pub const KIND_SOCKET: u8 = 3;

/// How a socket record's socket came to be.
pub const SOCKET_ACCEPTED: u8 = 1;
pub const SOCKET_CONNECTING: u8 = 2;
/// Seen for the first time under an OpenSSL call (a connection older than the agent,
/// or a client that connected before its first OpenSSL call).
pub const SOCKET_IN_USE: u8 = 3;

/// A process that uses OpenSSL accepted or connected a socket: told at once, so the
/// agent can look the connection up while it still exists (a short HTTPS exchange can
/// be over before its first plaintext record is read), with the peer's address from
/// the syscall for when it cannot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketRecord {
    pub kind: u8,
    pub role: u8,
    /// 4, 6, or 0 when the peer's address was not given.
    pub family: u8,
    pub _pad: u8,
    pub fd: i32,
    pub tgid: u32,
    pub port: u16,
    pub _pad2: u16,
    pub addr: [u8; 16],
}

/// Where a packet record comes from.
pub const SOURCE_TC_INGRESS: u8 = 1;
pub const SOURCE_TC_EGRESS: u8 = 2;
pub const SOURCE_CGROUP_INGRESS: u8 = 3;
pub const SOURCE_CGROUP_EGRESS: u8 = 4;

/// TCP flags, as in the header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Header of a packet record; up to `captured` payload bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketRecord {
    pub kind: u8,
    pub source: u8,
    /// 4 or 6.
    pub family: u8,
    pub flags: u8,
    pub ifindex: u32,
    /// CLOCK_MONOTONIC (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub seq: u32,
    pub ack: u32,
    /// TCP payload bytes in the packet; more than `captured` when it was truncated.
    pub payload_len: u32,
    pub captured: u32,
    pub sport: u16,
    pub dport: u16,
    pub window: u16,
    pub _pad: u16,
    /// IPv4 addresses take the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// TLS plaintext direction, as the process sees it.
pub const TLS_READ: u8 = 1;
pub const TLS_WRITE: u8 = 2;

/// Header of a TLS plaintext record; up to `captured` bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsRecord {
    pub kind: u8,
    pub direction: u8,
    pub _pad: u16,
    /// The socket's file descriptor in the process, or -1 when no syscall showed it yet.
    pub fd: i32,
    pub ts_ns: u64,
    /// Process id (thread group) and the `SSL *`: together they name the connection.
    pub tgid: u32,
    pub len: u32,
    pub ssl: u64,
    pub captured: u32,
    pub _pad2: u32,
}

/// Payload bytes a packet record carries at most, per size class. The ring buffer only
/// takes sizes known when the program is verified, so a record takes the smallest class
/// that holds its payload (up to the configured snap length).
pub const PACKET_CLASSES: [usize; 3] = [256, 2048, 16384];
/// The same for TLS records (a TLS record's plaintext is at most 16 KiB).
pub const TLS_CLASSES: [usize; 3] = [256, 2048, 16384];

/// Settings the agent writes before attaching (map `CONFIG`, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Payload bytes kept per packet (at most the largest class).
    pub snaplen: u32,
    /// Plaintext bytes kept per TLS read or write.
    pub tls_snaplen: u32,
    /// Non-zero: only packets with a port in the `PORTS` map.
    pub filter_ports: u32,
    /// Non-zero: only packets with an address in the `CIDRS` map.
    pub filter_cidrs: u32,
}

/// Key of the `CIDRS` longest-prefix map: IPv6, with IPv4 as `::ffff:a.b.c.d`.
pub type CidrKey = [u8; 16];

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    /// TCP packets the programs looked at.
    pub const PACKETS: u32 = 0;
    /// Packets queued to user space.
    pub const QUEUED: u32 = 1;
    /// Packets whose payload was cut at the snap length.
    pub const TRUNCATED: u32 = 2;
    /// Packets lost because the ring buffer was full.
    pub const RING_FULL: u32 = 3;
    /// Packets left out by the port or address filter.
    pub const FILTERED: u32 = 4;
    /// Packets that are not TCP over IPv4/IPv6 (or use IPv6 extension headers, or are
    /// IP fragments).
    pub const NOT_TCP: u32 = 5;
    /// Bytes of payload queued.
    pub const BYTES: u32 = 6;
    /// TLS reads and writes queued.
    pub const TLS_QUEUED: u32 = 7;
    /// TLS reads and writes cut at the TLS snap length.
    pub const TLS_TRUNCATED: u32 = 8;
    /// TLS reads and writes lost because the ring buffer was full.
    pub const TLS_RING_FULL: u32 = 9;
    /// TLS reads and writes whose data could not be read from the process.
    pub const TLS_READ_FAILED: u32 = 10;
    pub const COUNT: u32 = 11;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding holes that matter or references.
    unsafe impl aya::Pod for super::CaptureConfig {}
}
