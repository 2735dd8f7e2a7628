#!/usr/bin/env python3
"""Check the RoCEv2 ICRC of every UDP/4791 packet in a pcap (Ethernet or
raw IP link type), independently of the Go implementation: zlib's CRC-32
over the masked IPv4/UDP/BTH pseudo-header (RoCEv2 annex A17.8) preceded by
eight 0xff bytes for the masked LRH. Prints a summary; exits 1 on any bad
ICRC or if no packet was found. Usage: icrc_check.py FILE.pcap"""
import struct
import sys
import zlib


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        end = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        end = ">"
    else:
        raise SystemExit("not a pcap file (use tshark -F pcap)")
    linktype = struct.unpack(end + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(end + "IIII", data[off:off + 16])
        off += 16
        yield linktype, data[off:off + incl]
        off += incl


def icrc_ok(ip):
    ihl = (ip[0] & 0xF) * 4
    total = struct.unpack(">H", ip[2:4])[0]
    ip = ip[:total]
    udp = ip[ihl:ihl + 8]
    ib = ip[ihl + 8:]
    ps = bytearray(ip[:20] + udp + ib[:12])
    ps[1] = 0xFF                 # TOS
    ps[8] = 0xFF                 # TTL
    ps[10:12] = b"\xff\xff"      # IP checksum
    ps[26:28] = b"\xff\xff"      # UDP checksum
    ps[32] = 0xFF                # BTH resv8a / FECN / BECN
    crc = zlib.crc32(b"\xff" * 8 + bytes(ps) + ib[12:-4])
    return struct.unpack("<I", ib[-4:])[0] == crc


def main():
    good = bad = 0
    for linktype, frame in packets(sys.argv[1]):
        if linktype == 1:          # Ethernet
            if struct.unpack(">H", frame[12:14])[0] != 0x0800:
                continue
            ip = frame[14:]
        elif linktype in (101, 228):  # raw IP
            ip = frame
        elif linktype == 113:      # Linux cooked
            ip = frame[16:]
        else:
            raise SystemExit("unsupported link type %d" % linktype)
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0xF) * 4
        if struct.unpack(">H", ip[ihl + 2:ihl + 4])[0] != 4791:
            continue
        if icrc_ok(ip):
            good += 1
        else:
            bad += 1
    print("icrc: %d good, %d bad" % (good, bad))
    sys.exit(0 if good > 0 and bad == 0 else 1)


if __name__ == "__main__":
    main()
