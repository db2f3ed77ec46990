//! tc (clsact/TCX, ingress and egress) and cgroup_skb programs: every TCP packet that
//! carries payload or opens or closes a connection goes to user space as a header (the
//! 5-tuple, seq/ack, flags, direction, time) and up to `snaplen` payload bytes.

use core::ffi::c_void;

use aya_ebpf::bindings::{
    __sk_buff, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_UNSPEC,
};
use aya_ebpf::helpers::generated::{bpf_ktime_get_ns, bpf_skb_load_bytes};
use aya_ebpf::macros::{cgroup_skb, classifier, map};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{HashMap, LpmTrie, RingBuf};
use aya_ebpf::programs::{SkBuffContext, TcContext};
use tapline_ebpf_common::{
    CidrKey, KIND_PACKET, PACKET_CLASSES, PacketRecord, SOURCE_CGROUP_EGRESS,
    SOURCE_CGROUP_INGRESS, SOURCE_TC_EGRESS, SOURCE_TC_INGRESS, TCP_FIN, TCP_RST, TCP_SYN, counter,
};

use crate::shared::{bump, config};

/// Packet records; its size is set by the agent at load time.
#[map(name = "PACKETS")]
static PACKETS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Ports to capture when `filter_ports` is set (either end of the connection).
#[map(name = "PORTS")]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);

/// Networks to capture when `filter_cidrs` is set (either end).
#[map(name = "CIDRS")]
static CIDRS: LpmTrie<CidrKey, u8> = LpmTrie::with_max_entries(1024, 1);

#[classifier]
pub fn tapline_tc_ingress(ctx: TcContext) -> i32 {
    if let Some(l3) = network_offset(ctx.skb.skb) {
        capture(ctx.skb.skb, SOURCE_TC_INGRESS, l3);
    } else {
        bump(counter::NOT_TCP, 1);
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tapline_tc_egress(ctx: TcContext) -> i32 {
    if let Some(l3) = network_offset(ctx.skb.skb) {
        capture(ctx.skb.skb, SOURCE_TC_EGRESS, l3);
    } else {
        bump(counter::NOT_TCP, 1);
    }
    TC_ACT_UNSPEC
}

/// cgroup_skb programs see packets from their network header on.
#[cgroup_skb]
pub fn tapline_cgroup_ingress(ctx: SkBuffContext) -> i32 {
    capture(ctx.skb.skb, SOURCE_CGROUP_INGRESS, 0);
    1
}

#[cgroup_skb]
pub fn tapline_cgroup_egress(ctx: SkBuffContext) -> i32 {
    capture(ctx.skb.skb, SOURCE_CGROUP_EGRESS, 0);
    1
}

/// Where the IP header starts in a tc program's packet: after an Ethernet header (one
/// VLAN tag that was not offloaded is skipped), or at 0 on devices without a link
/// layer (tun, WireGuard). `skb->protocol` says which IP version to expect.
/// (`bpf_skb_load_bytes_relative` would know, but it only reads the linear part of a
/// packet, and payload often sits in page fragments.)
#[inline(always)]
fn network_offset(skb: *mut __sk_buff) -> Option<u32> {
    // SAFETY: the context pointer the kernel handed the program.
    let protocol = u16::from_be(unsafe { (*skb).protocol } as u16);
    let version = match protocol {
        0x0800 => 4,
        0x86dd => 6,
        _ => return None,
    };
    if let Some(h) = load::<18>(skb, 0) {
        let ethertype = be16(&h, 12);
        if ethertype == protocol {
            return Some(14);
        }
        if (ethertype == 0x8100 || ethertype == 0x88a8) && be16(&h, 16) == protocol {
            return Some(18);
        }
        if h[0] >> 4 == version {
            return Some(0);
        }
    }
    None
}

#[inline(always)]
fn load<const N: usize>(skb: *mut __sk_buff, offset: u32) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: the helper writes at most N bytes into `buf`.
    let r = unsafe {
        bpf_skb_load_bytes(
            skb as *const c_void,
            offset,
            buf.as_mut_ptr() as *mut c_void,
            N as u32,
        )
    };
    (r == 0).then_some(buf)
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn v4_mapped(a: &[u8]) -> CidrKey {
    let mut k = [0u8; 16];
    k[10] = 0xff;
    k[11] = 0xff;
    k[12] = a[0];
    k[13] = a[1];
    k[14] = a[2];
    k[15] = a[3];
    k
}

#[inline(never)]
fn capture(skb: *mut __sk_buff, source: u8, l3: u32) {
    // SAFETY: the context pointer the kernel handed the program.
    let (protocol, ifindex) = unsafe { ((*skb).protocol, (*skb).ifindex) };
    let mut rec = PacketRecord {
        kind: KIND_PACKET,
        source,
        ifindex,
        ..PacketRecord::default()
    };
    // Offsets below are from the start of the packet.
    let l4: u32;
    let ip_payload: u32;
    match u16::from_be(protocol as u16) {
        0x0800 => {
            let Some(h) = load::<20>(skb, l3) else {
                bump(counter::NOT_TCP, 1);
                return;
            };
            let ihl = u32::from(h[0] & 0x0f) * 4;
            let total = u32::from(be16(&h, 2));
            let fragment = be16(&h, 6) & 0x3fff != 0;
            if h[0] >> 4 != 4 || h[9] != 6 || ihl < 20 || fragment || total < ihl {
                bump(counter::NOT_TCP, 1);
                return;
            }
            rec.family = 4;
            rec.src[..4].copy_from_slice(&h[12..16]);
            rec.dst[..4].copy_from_slice(&h[16..20]);
            l4 = l3 + ihl;
            ip_payload = total - ihl;
        }
        0x86dd => {
            let Some(h) = load::<40>(skb, l3) else {
                bump(counter::NOT_TCP, 1);
                return;
            };
            if h[6] != 6 {
                bump(counter::NOT_TCP, 1);
                return;
            }
            rec.family = 6;
            rec.src.copy_from_slice(&h[8..24]);
            rec.dst.copy_from_slice(&h[24..40]);
            l4 = l3 + 40;
            ip_payload = u32::from(be16(&h, 4));
        }
        _ => {
            bump(counter::NOT_TCP, 1);
            return;
        }
    }
    let Some(t) = load::<20>(skb, l4) else {
        bump(counter::NOT_TCP, 1);
        return;
    };
    bump(counter::PACKETS, 1);
    let doff = u32::from(t[12] >> 4) * 4;
    if doff < 20 || doff > ip_payload {
        bump(counter::NOT_TCP, 1);
        return;
    }
    rec.sport = be16(&t, 0);
    rec.dport = be16(&t, 2);
    rec.seq = be32(&t, 4);
    rec.ack = be32(&t, 8);
    rec.flags = t[13];
    rec.window = be16(&t, 14);
    rec.payload_len = ip_payload - doff;
    if rec.payload_len == 0 && rec.flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
        return;
    }
    let cfg = config();
    if cfg.filter_ports != 0
        && PORTS.get_ptr(rec.sport).is_none()
        && PORTS.get_ptr(rec.dport).is_none()
    {
        bump(counter::FILTERED, 1);
        return;
    }
    if cfg.filter_cidrs != 0 {
        let (s, d) = if rec.family == 4 {
            (v4_mapped(&rec.src), v4_mapped(&rec.dst))
        } else {
            (rec.src, rec.dst)
        };
        if CIDRS.get(Key::new(128, s)).is_none() && CIDRS.get(Key::new(128, d)).is_none() {
            bump(counter::FILTERED, 1);
            return;
        }
    }
    // SAFETY: no arguments, no memory.
    rec.ts_ns = unsafe { bpf_ktime_get_ns() };
    let mut captured = rec.payload_len;
    if captured > cfg.snaplen {
        captured = cfg.snaplen;
    }
    if captured < rec.payload_len {
        bump(counter::TRUNCATED, 1);
    }
    let data_at = l4 + doff;
    let queued = if captured as usize <= PACKET_CLASSES[0] {
        emit::<{ PACKET_CLASSES[0] }>(skb, &mut rec, data_at, captured)
    } else if captured as usize <= PACKET_CLASSES[1] {
        emit::<{ PACKET_CLASSES[1] }>(skb, &mut rec, data_at, captured)
    } else {
        emit::<{ PACKET_CLASSES[2] }>(skb, &mut rec, data_at, captured)
    };
    if queued {
        bump(counter::QUEUED, 1);
        bump(counter::BYTES, u64::from(rec.captured));
    } else {
        bump(counter::RING_FULL, 1);
    }
}

/// Bytes waiting in the ring that make a packet wake the reader.
const WAKE_BYTES: u64 = 256 << 10;

#[repr(C)]
struct PacketSlot<const N: usize> {
    header: PacketRecord,
    data: [u8; N],
}

/// Reserves a record of the size class `N`, copies the payload into it and submits it.
/// False when the ring buffer is full.
#[inline(never)]
fn emit<const N: usize>(
    skb: *mut __sk_buff,
    rec: &mut PacketRecord,
    data_at: u32,
    captured: u32,
) -> bool {
    let Some(mut entry) = PACKETS.reserve::<PacketSlot<N>>(0) else {
        return false;
    };
    let slot = entry.as_mut_ptr();
    // The verifier must see the length bounded on this very register: read it back.
    let mut n = unsafe { core::ptr::read_volatile(&captured) };
    if n > N as u32 {
        n = N as u32;
    }
    rec.captured = 0;
    if n > 0 {
        // SAFETY: `slot` is the reserved record; `n` is in 1..=N.
        let r = unsafe {
            bpf_skb_load_bytes(
                skb as *const c_void,
                data_at,
                (*slot).data.as_mut_ptr() as *mut c_void,
                n,
            )
        };
        if r == 0 {
            rec.captured = n;
        }
    }
    // SAFETY: the reserved record is ours until submitted.
    unsafe { (*slot).header = *rec };
    // Wake the reader only once a batch is waiting (it also polls on a timer): a wake-up
    // per packet would cost more than the packet.
    let flags = if PACKETS.query(BPF_RB_AVAIL_DATA.into()) >= WAKE_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    entry.submit(flags);
    true
}
