//! Records read from the kernel's ring buffers, checked before use: a record that is too
//! short or claims more bytes than it carries is an error, never an out-of-bounds read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tapline_ebpf_common::{
    KIND_PACKET, KIND_SOCKET, KIND_TLS, PacketRecord, SocketRecord, TlsRecord,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record kind {0} is not the ring's kind")]
    Kind(u8),
    #[error("record claims {claimed} payload bytes but carries {carried}")]
    Length { claimed: u32, carried: usize },
    #[error("address family {0} is neither 4 nor 6")]
    Family(u8),
}

fn header<T: Copy>(bytes: &[u8]) -> Result<T, RecordError> {
    if bytes.len() < size_of::<T>() {
        return Err(RecordError::Short(bytes.len()));
    }
    // SAFETY: `T` is a `#[repr(C)]` record of plain integers (every bit pattern is
    // valid) and `bytes` holds at least `size_of::<T>()` bytes; the read is unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A TCP segment from the tc or cgroup programs, and the payload bytes it carries.
#[derive(Debug, Clone, Copy)]
pub struct PacketView<'a> {
    pub header: PacketRecord,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub payload: &'a [u8],
}

pub fn packet(bytes: &[u8]) -> Result<PacketView<'_>, RecordError> {
    let h: PacketRecord = header(bytes)?;
    if h.kind != KIND_PACKET {
        return Err(RecordError::Kind(h.kind));
    }
    let rest = &bytes[size_of::<PacketRecord>()..];
    let payload = rest
        .get(..h.captured as usize)
        .filter(|_| h.captured <= h.payload_len)
        .ok_or(RecordError::Length {
            claimed: h.captured,
            carried: rest.len(),
        })?;
    let (src, dst) = match h.family {
        4 => (
            IpAddr::V4(Ipv4Addr::new(h.src[0], h.src[1], h.src[2], h.src[3])),
            IpAddr::V4(Ipv4Addr::new(h.dst[0], h.dst[1], h.dst[2], h.dst[3])),
        ),
        6 => (
            IpAddr::V6(Ipv6Addr::from(h.src)),
            IpAddr::V6(Ipv6Addr::from(h.dst)),
        ),
        f => return Err(RecordError::Family(f)),
    };
    Ok(PacketView {
        header: h,
        src,
        dst,
        payload,
    })
}

/// Plaintext read or written through OpenSSL, and the bytes it carries.
#[derive(Debug, Clone, Copy)]
pub struct TlsView<'a> {
    pub header: TlsRecord,
    pub data: &'a [u8],
}

pub fn tls(bytes: &[u8]) -> Result<TlsView<'_>, RecordError> {
    let h: TlsRecord = header(bytes)?;
    if h.kind != KIND_TLS {
        return Err(RecordError::Kind(h.kind));
    }
    let rest = &bytes[size_of::<TlsRecord>()..];
    let data = rest
        .get(..h.captured as usize)
        .filter(|_| h.captured <= h.len)
        .ok_or(RecordError::Length {
            claimed: h.captured,
            carried: rest.len(),
        })?;
    Ok(TlsView { header: h, data })
}

/// What a record on the TLS ring is.
pub fn tls_ring_kind(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

/// A socket a TLS-using process accepted or is connecting, with the peer's address
/// when the syscall gave one.
pub fn socket(bytes: &[u8]) -> Result<(SocketRecord, Option<SocketAddr>), RecordError> {
    let h: SocketRecord = header(bytes)?;
    if h.kind != KIND_SOCKET {
        return Err(RecordError::Kind(h.kind));
    }
    let peer = match h.family {
        4 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(h.addr[0], h.addr[1], h.addr[2], h.addr[3])),
            h.port,
        )),
        6 => {
            let v6 = Ipv6Addr::from(h.addr);
            Some(SocketAddr::new(
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                h.port,
            ))
        }
        _ => None,
    };
    Ok((h, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: plain `#[repr(C)]` data read as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn packets_are_checked_before_use() {
        let mut h = PacketRecord {
            kind: KIND_PACKET,
            family: 4,
            src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            payload_len: 10,
            captured: 4,
            ..PacketRecord::default()
        };
        let mut b = bytes_of(&h);
        b.extend_from_slice(b"GET /");
        let p = packet(&b).unwrap();
        assert_eq!(p.payload, b"GET ");
        assert_eq!(p.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(packet(&b[..10]).unwrap_err(), RecordError::Short(10));
        h.captured = 100;
        let mut b = bytes_of(&h);
        b.extend_from_slice(b"GET /");
        assert!(matches!(packet(&b), Err(RecordError::Length { .. })));
        h.captured = 4;
        h.family = 9;
        let mut b = bytes_of(&h);
        b.extend_from_slice(b"GET /");
        assert_eq!(packet(&b).unwrap_err(), RecordError::Family(9));
        let t = TlsRecord {
            kind: KIND_TLS,
            len: 3,
            captured: 3,
            ..TlsRecord::default()
        };
        let mut b = bytes_of(&t);
        b.extend_from_slice(b"abc");
        assert_eq!(tls(&b).unwrap().data, b"abc");
        b.resize(200, 0);
        assert_eq!(packet(&b).unwrap_err(), RecordError::Kind(KIND_TLS));
        let s = SocketRecord {
            kind: KIND_SOCKET,
            family: 4,
            port: 443,
            addr: [192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..SocketRecord::default()
        };
        let (_, peer) = socket(&bytes_of(&s)).unwrap();
        assert_eq!(peer, Some("192.0.2.7:443".parse().unwrap()));
        assert_eq!(tls_ring_kind(&bytes_of(&s)), Some(KIND_SOCKET));
    }

    #[test]
    fn any_bytes_give_a_record_or_an_error() {
        let mut state = 0x1234_5678_u32;
        for len in 0..300 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let _ = packet(&b);
            let _ = tls(&b);
            let _ = socket(&b);
        }
    }
}
