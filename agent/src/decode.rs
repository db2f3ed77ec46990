//! Link, network and transport decoding: one captured frame in, one TCP segment (or a
//! counted reason why not) out. No I/O and no allocation: everything borrows the frame.
//!
//! Tunnels that cloud traffic mirroring and span ports deliver (VLAN/QinQ, MPLS, PPPoE,
//! GRE and ERSPAN, VXLAN, IP-in-IP, Teredo) are peeled here so the rest of the pipeline
//! only ever sees the inner TCP segment.

use std::net::IpAddr;

use etherparse::{IpNumber, Ipv6ExtensionSlice, LaxIpSlice, TcpHeaderSlice};

/// pcap link-layer header types (LINKTYPE_* values) that the decoder understands.
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const PPP: u32 = 9;
    pub const RAW_OPENBSD: u32 = 12;
    pub const RAW_BSDOS: u32 = 14;
    pub const PPP_HDLC: u32 = 50;
    pub const RAW: u32 = 101;
    pub const C_HDLC: u32 = 104;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

/// Nested encapsulations deeper than this are refused: a crafted packet of GRE inside
/// GRE inside GRE must not recurse without bound.
const MAX_ENCAP_DEPTH: u8 = 8;
const MAX_VLAN_TAGS: usize = 3;
const VXLAN_PORT: u16 = 4789;

/// Capture time of a packet, microseconds since the Unix epoch.
pub type Micros = i64;

/// The VLAN ids of a frame, outermost first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VlanIds {
    ids: [u16; MAX_VLAN_TAGS],
    len: u8,
}

impl VlanIds {
    fn push(&mut self, id: u16) -> bool {
        if usize::from(self.len) == MAX_VLAN_TAGS {
            return false;
        }
        self.ids[usize::from(self.len)] = id;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// TCP flag bits as on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// A decoded TCP segment borrowing the captured frame.
#[derive(Debug, Clone)]
pub struct TcpSegment<'a> {
    pub ts: Micros,
    pub vlan: VlanIds,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub payload: &'a [u8],
}

/// Identifies the datagram a fragment belongs to (RFC 791 / RFC 8200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub protocol: u8,
    pub vlan: VlanIds,
}

/// One IP fragment, to be handed to [`crate::decode::defrag::Defragmenter`].
#[derive(Debug, Clone)]
pub struct Fragment<'a> {
    pub key: FragmentKey,
    /// Offset of this fragment's payload in the original datagram, in bytes.
    pub offset: u32,
    pub more: bool,
    pub payload: &'a [u8],
}

/// What one frame turned out to be.
#[derive(Debug)]
pub enum Decoded<'a> {
    Tcp(TcpSegment<'a>),
    Fragment(Fragment<'a>),
    /// A well-formed packet that carries no TCP (UDP, ICMP, ARP…): not an error.
    NotTcp,
}

/// Why a frame could not be decoded. Each variant is a counter in `--stats` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
    #[error("truncated link-layer header")]
    TruncatedLink,
    #[error("malformed IP header")]
    BadIp,
    #[error("malformed TCP header")]
    BadTcp,
    #[error("bad TCP checksum")]
    BadChecksum,
    #[error("malformed tunnel header")]
    BadTunnel,
    #[error("too many nested encapsulations")]
    TooDeep,
}

impl DecodeError {
    pub const ALL: [DecodeError; 7] = [
        DecodeError::UnsupportedLinkType(0),
        DecodeError::TruncatedLink,
        DecodeError::BadIp,
        DecodeError::BadTcp,
        DecodeError::BadChecksum,
        DecodeError::BadTunnel,
        DecodeError::TooDeep,
    ];

    /// Stable label for counters.
    pub fn label(self) -> &'static str {
        match self {
            DecodeError::UnsupportedLinkType(_) => "unsupported_link_type",
            DecodeError::TruncatedLink => "truncated_link",
            DecodeError::BadIp => "bad_ip",
            DecodeError::BadTcp => "bad_tcp",
            DecodeError::BadChecksum => "bad_checksum",
            DecodeError::BadTunnel => "bad_tunnel",
            DecodeError::TooDeep => "too_deep",
        }
    }

    pub fn index(self) -> usize {
        match self {
            DecodeError::UnsupportedLinkType(_) => 0,
            DecodeError::TruncatedLink => 1,
            DecodeError::BadIp => 2,
            DecodeError::BadTcp => 3,
            DecodeError::BadChecksum => 4,
            DecodeError::BadTunnel => 5,
            DecodeError::TooDeep => 6,
        }
    }
}

/// Decoder settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decoder {
    /// Drop TCP segments whose checksum is wrong. Off by default: captures taken on the
    /// sending host carry unfinished checksums because of offload.
    pub validate_checksums: bool,
}

struct Ctx {
    ts: Micros,
    vlan: VlanIds,
    depth: u8,
}

impl Ctx {
    fn deeper(&mut self) -> Result<(), DecodeError> {
        self.depth += 1;
        if self.depth > MAX_ENCAP_DEPTH {
            Err(DecodeError::TooDeep)
        } else {
            Ok(())
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl Decoder {
    /// Decodes one frame captured with link type `linktype` at time `ts`.
    pub fn decode<'a>(
        &self,
        linktype: u32,
        ts: Micros,
        frame: &'a [u8],
    ) -> Result<Decoded<'a>, DecodeError> {
        let mut ctx = Ctx {
            ts,
            vlan: VlanIds::default(),
            depth: 0,
        };
        match linktype {
            linktype::ETHERNET => self.ethernet(&mut ctx, frame),
            linktype::NULL | linktype::LOOP => {
                let af = frame.get(..4).ok_or(DecodeError::TruncatedLink)?;
                // NULL is in the capturing host's byte order; LOOP in network order.
                // Address families are small, so whichever order gives a small value is right.
                let le = u32::from_le_bytes([af[0], af[1], af[2], af[3]]);
                let be = u32::from_be_bytes([af[0], af[1], af[2], af[3]]);
                let fam = le.min(be);
                match fam {
                    2 | 24 | 28 | 30 => self.ip(&mut ctx, &frame[4..]),
                    _ => Ok(Decoded::NotTcp),
                }
            }
            linktype::RAW | linktype::RAW_OPENBSD | linktype::RAW_BSDOS => self.ip(&mut ctx, frame),
            linktype::IPV4 | linktype::IPV6 => self.ip(&mut ctx, frame),
            linktype::LINUX_SLL => {
                let proto = be16(frame, 14).ok_or(DecodeError::TruncatedLink)?;
                self.ethertype(&mut ctx, proto, &frame[16..])
            }
            linktype::LINUX_SLL2 => {
                let proto = be16(frame, 0).ok_or(DecodeError::TruncatedLink)?;
                if frame.len() < 20 {
                    return Err(DecodeError::TruncatedLink);
                }
                self.ethertype(&mut ctx, proto, &frame[20..])
            }
            linktype::C_HDLC => {
                let proto = be16(frame, 2).ok_or(DecodeError::TruncatedLink)?;
                self.ethertype(&mut ctx, proto, &frame[4..])
            }
            linktype::PPP | linktype::PPP_HDLC => {
                // Optional address/control bytes 0xff 0x03 precede the protocol.
                let body = if frame.starts_with(&[0xff, 0x03]) {
                    &frame[2..]
                } else {
                    frame
                };
                self.ppp(&mut ctx, body)
            }
            other => Err(DecodeError::UnsupportedLinkType(other)),
        }
    }

    fn ethernet<'a>(&self, ctx: &mut Ctx, frame: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let proto = be16(frame, 12).ok_or(DecodeError::TruncatedLink)?;
        self.ethertype(ctx, proto, &frame[14..])
    }

    fn ethertype<'a>(
        &self,
        ctx: &mut Ctx,
        mut proto: u16,
        mut rest: &'a [u8],
    ) -> Result<Decoded<'a>, DecodeError> {
        loop {
            match proto {
                0x0800 | 0x86dd => return self.ip(ctx, rest),
                0x8100 | 0x88a8 | 0x9100 => {
                    let tci = be16(rest, 0).ok_or(DecodeError::TruncatedLink)?;
                    if !ctx.vlan.push(tci & 0x0fff) {
                        return Err(DecodeError::TooDeep);
                    }
                    proto = be16(rest, 2).ok_or(DecodeError::TruncatedLink)?;
                    rest = &rest[4..];
                }
                0x8847 | 0x8848 => return self.mpls(ctx, rest),
                0x8864 => {
                    // PPPoE session: 6-byte header then a PPP protocol number.
                    if rest.len() < 6 {
                        return Err(DecodeError::TruncatedLink);
                    }
                    return self.ppp(ctx, &rest[6..]);
                }
                _ => return Ok(Decoded::NotTcp),
            }
        }
    }

    fn mpls<'a>(&self, ctx: &mut Ctx, mut rest: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        for _ in 0..16 {
            let entry = rest.get(..4).ok_or(DecodeError::TruncatedLink)?;
            let bottom = entry[2] & 0x01 != 0;
            rest = &rest[4..];
            if bottom {
                return match rest.first().map(|b| b >> 4) {
                    Some(4) | Some(6) => self.ip(ctx, rest),
                    // Pseudowire with a control word, then Ethernet.
                    Some(0) if rest.len() > 4 => self.ethernet(ctx, &rest[4..]),
                    _ => Ok(Decoded::NotTcp),
                };
            }
        }
        Err(DecodeError::TooDeep)
    }

    fn ppp<'a>(&self, ctx: &mut Ctx, body: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        // Protocol-field compression (RFC 1661): an odd first byte is a 1-byte protocol.
        let first = *body.first().ok_or(DecodeError::TruncatedLink)?;
        let (proto, rest) = if first & 1 == 1 {
            (u16::from(first), &body[1..])
        } else {
            (be16(body, 0).ok_or(DecodeError::TruncatedLink)?, &body[2..])
        };
        match proto {
            0x0021 | 0x0057 => self.ip(ctx, rest),
            _ => Ok(Decoded::NotTcp),
        }
    }

    fn ip<'a>(&self, ctx: &mut Ctx, packet: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        // The common case, checked by hand: IPv4 without options, not fragmented, whole.
        if let [
            0x45,
            _,
            l0,
            l1,
            _,
            _,
            f0,
            f1,
            _,
            proto,
            _,
            _,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
            ..,
        ] = *packet
        {
            let total = usize::from(u16::from_be_bytes([l0, l1]));
            let fragmented = u16::from_be_bytes([f0, f1]) & 0x3fff != 0;
            if !fragmented && (20..=packet.len()).contains(&total) {
                let src = IpAddr::V4([s0, s1, s2, s3].into());
                let dst = IpAddr::V4([d0, d1, d2, d3].into());
                return self.transport(ctx, IpNumber(proto), src, dst, &packet[20..total]);
            }
        }
        let (ip, _ext_err) = LaxIpSlice::from_slice(packet).map_err(|_| DecodeError::BadIp)?;
        let src = ip.source_addr();
        let dst = ip.destination_addr();
        let payload = ip.payload();
        if payload.fragmented {
            let (id, offset, more) = match &ip {
                LaxIpSlice::Ipv4(v4) => {
                    let h = v4.header();
                    (
                        u32::from(h.identification()),
                        u32::from(h.fragments_offset().value()) * 8,
                        h.more_fragments(),
                    )
                }
                LaxIpSlice::Ipv6(v6) => {
                    let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                        Ipv6ExtensionSlice::Fragment(f) => Some(f),
                        _ => None,
                    });
                    let f = frag.ok_or(DecodeError::BadIp)?;
                    (
                        f.identification(),
                        u32::from(f.fragment_offset().value()) * 8,
                        f.more_fragments(),
                    )
                }
            };
            return Ok(Decoded::Fragment(Fragment {
                key: FragmentKey {
                    src,
                    dst,
                    id,
                    protocol: payload.ip_number.0,
                    vlan: ctx.vlan,
                },
                offset,
                more,
                payload: payload.payload,
            }));
        }
        self.transport(ctx, payload.ip_number, src, dst, payload.payload)
    }

    /// Decodes the transport layer of an IP payload; also used for defragmented datagrams.
    pub fn decode_ip_payload<'a>(
        &self,
        ts: Micros,
        vlan: VlanIds,
        protocol: u8,
        src: IpAddr,
        dst: IpAddr,
        payload: &'a [u8],
    ) -> Result<Decoded<'a>, DecodeError> {
        let mut ctx = Ctx { ts, vlan, depth: 1 };
        self.transport(&mut ctx, IpNumber(protocol), src, dst, payload)
    }

    fn transport<'a>(
        &self,
        ctx: &mut Ctx,
        proto: IpNumber,
        src: IpAddr,
        dst: IpAddr,
        payload: &'a [u8],
    ) -> Result<Decoded<'a>, DecodeError> {
        match proto {
            IpNumber::TCP => self.tcp(ctx, src, dst, payload),
            IpNumber::UDP => self.udp(ctx, payload),
            IpNumber::GRE => self.gre(ctx, payload),
            IpNumber::IPV4 | IpNumber::IPV6 => {
                ctx.deeper()?;
                self.ip(ctx, payload)
            }
            _ => Ok(Decoded::NotTcp),
        }
    }

    fn tcp<'a>(
        &self,
        ctx: &mut Ctx,
        src: IpAddr,
        dst: IpAddr,
        segment: &'a [u8],
    ) -> Result<Decoded<'a>, DecodeError> {
        let h = TcpHeaderSlice::from_slice(segment).map_err(|_| DecodeError::BadTcp)?;
        if self.validate_checksums {
            let sum = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    h.calc_checksum_ipv4_raw(s.octets(), d.octets(), &segment[h.slice().len()..])
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    h.calc_checksum_ipv6_raw(s.octets(), d.octets(), &segment[h.slice().len()..])
                }
                _ => return Err(DecodeError::BadIp),
            };
            if sum.ok() != Some(h.checksum()) {
                return Err(DecodeError::BadChecksum);
            }
        }
        let flags = segment[13];
        Ok(Decoded::Tcp(TcpSegment {
            ts: ctx.ts,
            vlan: ctx.vlan,
            src,
            dst,
            sport: h.source_port(),
            dport: h.destination_port(),
            seq: h.sequence_number(),
            ack: h.acknowledgment_number(),
            flags: TcpFlags(flags),
            window: h.window_size(),
            payload: &segment[h.slice().len()..],
        }))
    }

    fn udp<'a>(&self, ctx: &mut Ctx, datagram: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let (Some(_), Some(dport)) = (be16(datagram, 0), be16(datagram, 2)) else {
            return Ok(Decoded::NotTcp);
        };
        let Some(body) = datagram.get(8..) else {
            return Ok(Decoded::NotTcp);
        };
        if dport == VXLAN_PORT {
            // VXLAN: flags (I bit set), reserved, 24-bit VNI, reserved; then Ethernet.
            if body.len() < 8 + 14 || body[0] & 0x08 == 0 {
                return Err(DecodeError::BadTunnel);
            }
            ctx.deeper()?;
            return self.ethernet(ctx, &body[8..]);
        }
        // Teredo relays and direct peers use any port (3544 is only the server's), so
        // every UDP payload is tried; only a self-consistent IPv6 packet is taken.
        self.teredo(ctx, body)
    }

    /// Teredo (RFC 4380) carries IPv6 in UDP, optionally after authentication and
    /// origin-indication headers. Only payloads that are a consistent IPv6 packet are
    /// taken, as other engines do, so ordinary UDP on port 3544 is not misread.
    fn teredo<'a>(&self, ctx: &mut Ctx, mut body: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        if body.len() >= 4 && body[0] == 0 && body[1] == 1 {
            let id_len = usize::from(body[2]);
            let au_len = usize::from(body[3]);
            let skip = 4 + id_len + au_len + 8 + 1;
            body = body.get(skip..).unwrap_or(&[]);
        }
        if body.len() >= 8 && body[0] == 0 && body[1] == 0 {
            body = &body[8..];
        }
        let is_ipv6 = body.len() >= 40
            && body[0] >> 4 == 6
            && usize::from(u16::from_be_bytes([body[4], body[5]])) + 40 == body.len()
            && matches!(body[6], 0 | 6 | 17 | 43 | 44 | 58 | 59 | 60);
        if !is_ipv6 {
            return Ok(Decoded::NotTcp);
        }
        ctx.deeper()?;
        self.ip(ctx, body)
    }

    fn gre<'a>(&self, ctx: &mut Ctx, packet: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let flags = be16(packet, 0).ok_or(DecodeError::BadTunnel)?;
        let proto = be16(packet, 2).ok_or(DecodeError::BadTunnel)?;
        let version = flags & 0x7;
        let mut len = 4;
        if flags & 0x8000 != 0 {
            len += 4; // checksum + reserved
        }
        if flags & 0x2000 != 0 {
            len += 4; // key
        }
        if flags & 0x1000 != 0 {
            len += 4; // sequence
        }
        if version == 1 && flags & 0x0080 != 0 {
            len += 4; // enhanced GRE acknowledgment (PPTP)
        }
        let rest = packet.get(len..).ok_or(DecodeError::BadTunnel)?;
        ctx.deeper()?;
        match proto {
            0x0800 | 0x86dd => self.ip(ctx, rest),
            0x6558 => self.ethernet(ctx, rest),
            0x880b => {
                let body = if rest.starts_with(&[0xff, 0x03]) {
                    &rest[2..]
                } else {
                    rest
                };
                // PPP in enhanced GRE may use a 1-byte compressed protocol field.
                match body.first() {
                    Some(0x21) => self.ip(ctx, &body[1..]),
                    Some(0x57) => self.ip(ctx, &body[1..]),
                    _ => self.ppp(ctx, body),
                }
            }
            // ERSPAN type II: 8-byte header; type III: 12 bytes plus an optional 8.
            0x88be => self.ethernet(ctx, rest.get(8..).ok_or(DecodeError::BadTunnel)?),
            0x22eb => {
                let hdr = rest.get(..12).ok_or(DecodeError::BadTunnel)?;
                let skip = if hdr[11] & 0x01 != 0 { 20 } else { 12 };
                self.ethernet(ctx, rest.get(skip..).ok_or(DecodeError::BadTunnel)?)
            }
            _ => Ok(Decoded::NotTcp),
        }
    }
}

pub mod defrag;

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let tcp = [
            0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ];
        ip.extend_from_slice(&tcp);
        ip.extend_from_slice(payload);
        let len = ip.len() as u16;
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        ip
    }

    fn eth(ethertype: u16, inner: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(inner);
        f
    }

    fn tcp_of(d: Decoded<'_>) -> TcpSegment<'_> {
        match d {
            Decoded::Tcp(t) => t,
            other => panic!("expected TCP, got {other:?}"),
        }
    }

    #[test]
    fn ethernet_qinq_ipv4_tcp() {
        let ip = ipv4_tcp(b"GET / HTTP/1.1\r\n");
        let mut inner = vec![0x00, 0x14, 0x08, 0x00];
        inner.extend_from_slice(&ip);
        let mut outer = vec![0x00, 0x0a, 0x81, 0x00];
        outer.extend_from_slice(&inner);
        let frame = eth(0x88a8, &outer);
        let seg = tcp_of(
            Decoder::default()
                .decode(linktype::ETHERNET, 7, &frame)
                .unwrap(),
        );
        assert_eq!(seg.vlan.as_slice(), &[10, 20]);
        assert_eq!(seg.dport, 80);
        assert_eq!(seg.payload, b"GET / HTTP/1.1\r\n");
        assert_eq!(seg.ts, 7);
    }

    #[test]
    fn vxlan_in_udp() {
        let inner = eth(0x0800, &ipv4_tcp(b"x"));
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend_from_slice(&inner);
        let mut udp = vec![0x12, 0x34, 0x12, 0xb5, 0, 0, 0, 0];
        udp.extend_from_slice(&vx);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
        ];
        ip.extend_from_slice(&udp);
        let len = ip.len() as u16;
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        let seg = tcp_of(Decoder::default().decode(linktype::RAW, 0, &ip).unwrap());
        assert_eq!(seg.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(seg.payload, b"x");
    }

    #[test]
    fn gre_nesting_is_bounded() {
        let mut pkt = ipv4_tcp(b"y");
        for _ in 0..20 {
            let mut gre = vec![0, 0, 0x08, 0x00];
            gre.extend_from_slice(&pkt);
            let mut ip = vec![
                0x45, 0, 0, 0, 0, 1, 0, 0, 64, 47, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
            ];
            ip.extend_from_slice(&gre);
            let len = ip.len() as u16;
            ip[2..4].copy_from_slice(&len.to_be_bytes());
            pkt = ip;
        }
        assert_eq!(
            Decoder::default()
                .decode(linktype::RAW, 0, &pkt)
                .unwrap_err(),
            DecodeError::TooDeep
        );
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let frame = eth(0x0800, &ipv4_tcp(b"hello"));
        let d = Decoder::default();
        for n in 0..frame.len() {
            let _ = d.decode(linktype::ETHERNET, 0, &frame[..n]);
            let _ = d.decode(linktype::LINUX_SLL2, 0, &frame[..n]);
            let _ = d.decode(linktype::NULL, 0, &frame[..n]);
        }
    }

    #[test]
    fn checksum_validation_is_optional() {
        let ip = ipv4_tcp(b"abc");
        assert!(Decoder::default().decode(linktype::RAW, 0, &ip).is_ok());
        let strict = Decoder {
            validate_checksums: true,
        };
        assert_eq!(
            strict.decode(linktype::RAW, 0, &ip).unwrap_err(),
            DecodeError::BadChecksum
        );
    }
}
