"""txcsum.py IFNAME on|off: transmit checksum offload of an interface (like `ethtool -K IF tx
off`), for hosts without ethtool. Off also disables TSO, so frames leave complete and MTU-sized
with computed checksums - needed on interfaces that send into a switch reading its ports with
AF_PACKET (otherwise a veth hands over TCP segments whose checksum was never filled in)."""
import ctypes
import fcntl
import socket
import struct
import sys

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def set_tx_checksum(ifname, on):
    # struct ethtool_value { __u32 cmd; __u32 data; }, pointed to by ifreq.ifr_data
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 1 if on else 0), 8)
    ifreq = struct.pack("16sP16x", ifname.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("on", "off"):
        sys.exit("usage: txcsum.py IFNAME on|off")
    set_tx_checksum(sys.argv[1], sys.argv[2] == "on")
