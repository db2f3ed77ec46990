//! uprobes on OpenSSL's `SSL_read`, `SSL_write`, `SSL_read_ex` and `SSL_write_ex`: the
//! plaintext of HTTPS connections as the process reads and writes it. The entry probe
//! remembers the call's buffer; the return probe copies what was really transferred.
//! The socket comes from the read/write syscalls OpenSSL makes inside the call (syscall
//! tracepoints), remembered per `SSL *` for the calls that are served from its buffer.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_ktime_get_ns, bpf_probe_read_user};
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user as read_user};
use aya_ebpf::macros::{map, tracepoint, uprobe, uretprobe};
use aya_ebpf::maps::{HashMap, LruHashMap, RingBuf};
use aya_ebpf::programs::{ProbeContext, RetProbeContext, TracePointContext};
use tapline_ebpf_common::{
    KIND_SOCKET, KIND_TLS, SOCKET_ACCEPTED, SOCKET_CONNECTING, SOCKET_IN_USE, SocketRecord,
    TLS_CLASSES, TLS_READ, TLS_WRITE, TlsRecord, counter,
};

use crate::shared::{bump, config};

/// TLS plaintext records.
#[map(name = "TLS_DATA")]
static TLS_DATA: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// An SSL call in progress, per thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct SslCall {
    ssl: u64,
    buf: u64,
    /// `size_t *` where the `_ex` variants store the length; 0 for the plain ones.
    out_len: u64,
    fd: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SslKey {
    tgid: u32,
    _pad: u32,
    ssl: u64,
}

#[map(name = "SSL_CALLS")]
static SSL_CALLS: HashMap<u64, SslCall> = HashMap::with_max_entries(16384, 0);

/// The socket each `SSL *` was last seen using.
#[map(name = "SSL_FDS")]
static SSL_FDS: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(65536, 0);

/// Processes seen calling OpenSSL (and those the agent found mapping it): their accepts
/// and connects are reported.
#[map(name = "TLS_PIDS")]
static TLS_PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// Sockets being connected, by any process: (pid, fd) → the address (raw sockaddr),
/// for when a process turns out to use OpenSSL on it.
#[map(name = "CONNECTS")]
static CONNECTS: LruHashMap<SslKey, [u8; 24]> = LruHashMap::with_max_entries(65536, 0);

/// accept() calls in progress: where the peer's address will be written.
#[map(name = "ACCEPTS")]
static ACCEPTS: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

#[inline(always)]
fn is_tls_process(id: u64) -> bool {
    TLS_PIDS.get_ptr((id >> 32) as u32).is_some()
}

/// `syscalls:sys_enter_accept` and `sys_enter_accept4`.
#[tracepoint]
pub fn tapline_sys_enter_accept(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if is_tls_process(id) {
        // SAFETY: the tracepoint's own record (`upeer_sockaddr` at offset 24).
        if let Ok(addr) = unsafe { ctx.read_at::<u64>(24) } {
            let _ = ACCEPTS.insert(id, addr, 0);
        }
    }
    0
}

/// `syscalls:sys_exit_accept` and `sys_exit_accept4`: the new socket and its peer.
#[tracepoint]
pub fn tapline_sys_exit_accept(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: a plain value read out of the map.
    let Some(addr) = (unsafe { ACCEPTS.get(&id) }).copied() else {
        return 0;
    };
    let _ = ACCEPTS.remove(id);
    // SAFETY: the tracepoint's own record (`ret` at offset 16).
    let fd = match unsafe { ctx.read_at::<i64>(16) } {
        Ok(fd) if fd >= 0 => fd as i32,
        _ => return 0,
    };
    report_socket(id, fd, SOCKET_ACCEPTED, addr);
    0
}

/// `syscalls:sys_enter_connect`: the socket and the address it connects to. Reported
/// now for processes known to use OpenSSL, remembered for the others (a client
/// usually connects before its first OpenSSL call).
#[tracepoint]
pub fn tapline_sys_enter_connect(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the tracepoint's own record (`fd` at 16, `uservaddr` at 24).
    let (Ok(fd), Ok(addr)) = (unsafe { ctx.read_at::<u64>(16) }, unsafe {
        ctx.read_at::<u64>(24)
    }) else {
        return 0;
    };
    if is_tls_process(id) {
        report_socket(id, fd as i32, SOCKET_CONNECTING, addr);
        return 0;
    }
    // SAFETY: reading the caller's memory through the checked user-memory helper.
    if let Ok(raw) = unsafe { read_user(addr as *const [u8; 24]) } {
        // Only IPv4 and IPv6 (not Unix sockets).
        if raw[0] == 2 || raw[0] == 10 {
            let key = SslKey {
                tgid: (id >> 32) as u32,
                _pad: 0,
                ssl: fd,
            };
            let _ = CONNECTS.insert(key, raw, 0);
        }
    }
    0
}

#[inline(always)]
fn report_socket(id: u64, fd: i32, role: u8, sockaddr: u64) {
    if sockaddr == 0 {
        emit_socket(id, fd, role, None);
        return;
    }
    // SAFETY: reading the caller's memory through the checked user-memory helper.
    let raw = unsafe { read_user(sockaddr as *const [u8; 24]) }.ok();
    emit_socket(id, fd, role, raw.as_ref());
}

#[inline(always)]
fn emit_socket(id: u64, fd: i32, role: u8, raw: Option<&[u8; 24]>) {
    let Some(mut entry) = TLS_DATA.reserve::<SocketRecord>(0) else {
        bump(counter::TLS_RING_FULL, 1);
        return;
    };
    let mut rec = SocketRecord {
        kind: KIND_SOCKET,
        role,
        fd,
        tgid: (id >> 32) as u32,
        ..SocketRecord::default()
    };
    {
        // struct sockaddr_in / sockaddr_in6: family, port, then the address.
        if let Some(raw) = raw {
            let family = u16::from_ne_bytes([raw[0], raw[1]]);
            rec.port = u16::from_be_bytes([raw[2], raw[3]]);
            if family == 2 {
                rec.family = 4;
                rec.addr[0] = raw[4];
                rec.addr[1] = raw[5];
                rec.addr[2] = raw[6];
                rec.addr[3] = raw[7];
            } else if family == 10 {
                rec.family = 6;
                let mut i = 0;
                while i < 16 {
                    rec.addr[i] = raw[8 + i];
                    i += 1;
                }
            }
        }
    }
    entry.write(rec);
    entry.submit(0);
}

#[uprobe]
pub fn tapline_ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, false);
    0
}

#[uretprobe]
pub fn tapline_ssl_write_ret(ctx: RetProbeContext) -> u32 {
    leave(&ctx, TLS_WRITE);
    0
}

#[uprobe]
pub fn tapline_ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, false);
    0
}

#[uretprobe]
pub fn tapline_ssl_read_ret(ctx: RetProbeContext) -> u32 {
    leave(&ctx, TLS_READ);
    0
}

#[uprobe]
pub fn tapline_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, true);
    0
}

#[uprobe]
pub fn tapline_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, true);
    0
}

/// Attached to `syscalls:sys_enter_{read,write,recvfrom,sendto}`: inside an SSL call,
/// the descriptor it uses is the connection's socket.
#[tracepoint]
pub fn tapline_sys_enter_fd(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if let Some(call) = SSL_CALLS.get_ptr_mut(id) {
        // `fd` follows the common fields and the syscall number (offset 16).
        // SAFETY: the tracepoint's own record.
        if let Ok(fd) = unsafe { ctx.read_at::<u64>(16) } {
            unsafe { (*call).fd = fd as i32 };
        }
    }
    0
}

#[inline(always)]
fn enter(ctx: &ProbeContext, ex: bool) {
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let out_len = if ex {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let id = bpf_get_current_pid_tgid();
    if !is_tls_process(id) {
        let _ = TLS_PIDS.insert((id >> 32) as u32, 1, 0);
    }
    let key = SslKey {
        tgid: (id >> 32) as u32,
        _pad: 0,
        ssl,
    };
    // SAFETY: a plain value read out of the map.
    let fd = unsafe { SSL_FDS.get(&key) }.copied().unwrap_or(-1);
    let call = SslCall {
        ssl,
        buf,
        out_len,
        fd,
        _pad: 0,
    };
    let _ = SSL_CALLS.insert(id, call, 0);
}

#[inline(always)]
fn leave(ctx: &RetProbeContext, direction: u8) {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: a plain value read out of the map.
    let Some(call) = (unsafe { SSL_CALLS.get(&id) }).copied() else {
        return;
    };
    let _ = SSL_CALLS.remove(id);
    // Both variants return a C `int`: the upper half of the register is not part of it.
    let ret = i64::from(ctx.ret::<i32>());
    let len: u64 = if call.out_len != 0 {
        if ret != 1 {
            return;
        }
        // SAFETY: reading the caller's `size_t` through the checked user-memory helper.
        match unsafe { read_user(call.out_len as *const u64) } {
            Ok(n) => n,
            Err(_) => return,
        }
    } else {
        if ret <= 0 {
            return;
        }
        ret as u64
    };
    if len == 0 {
        return;
    }
    let tgid = (id >> 32) as u32;
    if call.fd >= 0 {
        let key = SslKey {
            tgid,
            _pad: 0,
            ssl: call.ssl,
        };
        // SAFETY: a plain value read out of the map.
        let known = unsafe { SSL_FDS.get(&key) }.copied();
        if known != Some(call.fd) {
            let _ = SSL_FDS.insert(key, call.fd, 0);
            // A connection new to us: tell the agent now, while it still exists, with
            // the address it was connected to when this process connected it.
            let ckey = SslKey {
                tgid,
                _pad: 0,
                ssl: call.fd as u64,
            };
            // SAFETY: a plain value read out of the map.
            let raw = unsafe { CONNECTS.get(&ckey) }.copied();
            emit_socket(id, call.fd, SOCKET_IN_USE, raw.as_ref());
        }
    }
    let mut rec = TlsRecord {
        kind: KIND_TLS,
        direction,
        fd: call.fd,
        // SAFETY: no arguments, no memory.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        len: if len > u64::from(u32::MAX) {
            u32::MAX
        } else {
            len as u32
        },
        ssl: call.ssl,
        ..TlsRecord::default()
    };
    let cfg = config();
    let mut captured = rec.len;
    if captured > cfg.tls_snaplen {
        captured = cfg.tls_snaplen;
    }
    if captured < rec.len {
        bump(counter::TLS_TRUNCATED, 1);
    }
    let queued = if captured as usize <= TLS_CLASSES[0] {
        emit::<{ TLS_CLASSES[0] }>(&mut rec, call.buf, captured)
    } else if captured as usize <= TLS_CLASSES[1] {
        emit::<{ TLS_CLASSES[1] }>(&mut rec, call.buf, captured)
    } else {
        emit::<{ TLS_CLASSES[2] }>(&mut rec, call.buf, captured)
    };
    bump(
        if queued {
            counter::TLS_QUEUED
        } else {
            counter::TLS_RING_FULL
        },
        1,
    );
}

#[repr(C)]
struct TlsSlot<const N: usize> {
    header: TlsRecord,
    data: [u8; N],
}

#[inline(always)]
fn emit<const N: usize>(rec: &mut TlsRecord, buf: u64, captured: u32) -> bool {
    let Some(mut entry) = TLS_DATA.reserve::<TlsSlot<N>>(0) else {
        return false;
    };
    let slot = entry.as_mut_ptr();
    let mut n = unsafe { core::ptr::read_volatile(&captured) };
    if n > N as u32 {
        n = N as u32;
    }
    rec.captured = 0;
    if n > 0 {
        // SAFETY: `slot` is the reserved record; `n` is in 1..=N.
        let r = unsafe {
            bpf_probe_read_user(
                (*slot).data.as_mut_ptr() as *mut c_void,
                n,
                buf as *const c_void,
            )
        };
        if r == 0 {
            rec.captured = n;
        } else {
            bump(counter::TLS_READ_FAILED, 1);
        }
    }
    // SAFETY: the reserved record is ours until submitted.
    unsafe { (*slot).header = *rec };
    entry.submit(0);
    true
}
