"""Writes capture variants the corpus lacks from a real loopback capture:
vxlan-reordered.pcap (every frame inside VXLAN, data segments swapped pairwise and some
retransmitted) and fragmented-sll.pcap (Linux SLL link type, IPv4 packets cut into
8-byte-aligned fragments delivered last-first)."""
import struct
import subprocess
import sys


def read_pcap(path):
    raw = subprocess.run(["editcap", "-F", "pcap", path, "-"], check=True, capture_output=True).stdout
    magic, = struct.unpack("<I", raw[:4])
    assert magic == 0xA1B2C3D4, hex(magic)
    link, = struct.unpack("<I", raw[20:24])
    frames, pos = [], 24
    while pos + 16 <= len(raw):
        sec, usec, cap, orig = struct.unpack("<IIII", raw[pos:pos + 16])
        frames.append((sec, usec, raw[pos + 16:pos + 16 + cap]))
        pos += 16 + cap
    return link, frames


def write_pcap(path, link, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link))
        for sec, usec, data in frames:
            f.write(struct.pack("<IIII", sec, usec, len(data), len(data)) + data)


def tcp_payload_len(frame):
    if frame[12:14] != b"\x08\x00":
        return 0
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    total, = struct.unpack("!H", ip[2:4])
    if ip[9] != 6:
        return 0
    off = (ip[ihl + 12] >> 4) * 4
    return total - ihl - off


def vxlan(frame, i):
    udp_len = 8 + 8 + len(frame)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, i & 0xFFFF, 0, 64, 17, 0,
                     bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
    udp = struct.pack("!HHHH", 40000 + i % 100, 4789, udp_len, 0)
    vx = struct.pack("!BBHI", 0x08, 0, 0, 42 << 8)
    eth = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
    return eth + ip + udp + vx + frame


def fragments(frame, size=128):
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    total, = struct.unpack("!H", ip[2:4])
    payload = ip[ihl:total]
    if len(payload) <= size:
        return [frame[14:]]
    out = []
    for off in range(0, len(payload), size):
        part = payload[off:off + size]
        more = 0x2000 if off + size < len(payload) else 0
        hdr = bytearray(ip[:ihl])
        struct.pack_into("!H", hdr, 2, ihl + len(part))
        struct.pack_into("!H", hdr, 6, more | (off // 8))
        out.append(bytes(hdr) + part)
    return out[::-1]


def sll(packet):
    return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, 0x0800) + packet


def main(src):
    link, frames = read_pcap(src)
    assert link == 1, link
    out, i, pending = [], 0, None
    for sec, usec, data in frames:
        if tcp_payload_len(data) > 0:
            if pending is None:
                pending = (sec, usec, data)
                continue
            out += [(sec, usec, vxlan(data, i)), (pending[0], pending[1], vxlan(pending[2], i + 1))]
            if i % 3 == 0:
                out.append((sec, usec, vxlan(data, i + 2)))
            pending = None
            i += 3
            continue
        if pending is not None:
            out.append((pending[0], pending[1], vxlan(pending[2], i)))
            pending = None
        out.append((sec, usec, vxlan(data, i)))
        i += 1
    if pending is not None:
        out.append((pending[0], pending[1], vxlan(pending[2], i)))
    write_pcap("vxlan-reordered.pcap", 1, out)
    frag = []
    for sec, usec, data in frames:
        if data[12:14] == b"\x08\x00":
            frag += [(sec, usec, sll(p)) for p in fragments(data)]
    write_pcap("fragmented-sll.pcap", 113, frag)


if __name__ == "__main__":
    main(sys.argv[1])
