#!/usr/bin/env python3
"""Tiny CQL native-protocol (v4) probe, Python standard library only.

Used by scripts/cassandra.sh to decide whether a node is *really* serving
CQL (an open TCP port is not enough: Cassandra binds 9042 a moment before it
can answer queries).  It sends OPTIONS and STARTUP, expects SUPPORTED and
READY, then runs `SELECT release_version FROM system.local` and any
`--query` given, printing result rows tab-separated.

Exit codes: 0 = ready (and every query succeeded), 1 = not reachable / not
ready / protocol trouble, 2 = the server answered a query with an error.

Examples:
    scripts/cql_probe.py --port 9042
    scripts/cql_probe.py -e "CREATE KEYSPACE k WITH replication = \
        {'class': 'SimpleStrategy', 'replication_factor': 1}"
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import sys
import uuid

PROTOCOL_VERSION = 4  # v4 is the newest version without v5's segment framing

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_OPTIONS, OP_SUPPORTED, OP_QUERY, OP_RESULT = 0x05, 0x06, 0x07, 0x08

CONSISTENCY = {"ANY": 0, "ONE": 1, "TWO": 2, "THREE": 3, "QUORUM": 4,
               "ALL": 5, "LOCAL_QUORUM": 6, "EACH_QUORUM": 7, "SERIAL": 8,
               "LOCAL_SERIAL": 9, "LOCAL_ONE": 10}


class ProbeError(Exception):
    """Not ready / not reachable / unexpected protocol answer (exit 1)."""


class ServerError(Exception):
    """The server answered with an ERROR frame (exit 2)."""


class Reader:
    """Cursor over a frame body, decoding the protocol's [notations]."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProbeError("truncated frame body")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def short(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def string(self) -> str:
        return self.take(self.short()).decode("utf-8")

    def bytes(self) -> bytes | None:
        n = self.int()
        return None if n < 0 else self.take(n)

    def string_list(self) -> list[str]:
        return [self.string() for _ in range(self.short())]

    def string_multimap(self) -> dict[str, list[str]]:
        return {self.string(): self.string_list() for _ in range(self.short())}

    def type_option(self):
        """Returns a nested tuple describing a column type."""
        tid = self.short()
        if tid == 0x0000:
            return ("custom", self.string())
        if tid in (0x0020, 0x0022):  # list, set
            return (tid, self.type_option())
        if tid == 0x0021:  # map
            return (tid, self.type_option(), self.type_option())
        if tid == 0x0030:  # UDT
            self.string(), self.string()  # keyspace, type name
            fields = [(self.string(), self.type_option()) for _ in range(self.short())]
            return (tid, fields)
        if tid == 0x0031:  # tuple
            return (tid, [self.type_option() for _ in range(self.short())])
        return (tid,)


def encode_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def encode_long_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack(">i", len(b)) + b


def decode_value(typ, raw: bytes | None) -> str:
    """Renders one cell as text; unknown/complex types fall back to hex."""
    if raw is None:
        return "NULL"
    tid = typ[0]
    if tid in (0x0001, 0x000D):  # ascii, varchar
        return raw.decode("utf-8", "replace")
    if tid in (0x0002, 0x0005, 0x000B, 0x0012):  # bigint, counter, timestamp, time
        return str(struct.unpack(">q", raw)[0])
    if tid == 0x0009:
        return str(struct.unpack(">i", raw)[0])
    if tid == 0x0013:
        return str(struct.unpack(">h", raw)[0])
    if tid == 0x0014:
        return str(struct.unpack(">b", raw)[0])
    if tid == 0x0004:
        return "true" if raw != b"\x00" else "false"
    if tid == 0x0007:
        return repr(struct.unpack(">d", raw)[0])
    if tid == 0x0008:
        return repr(struct.unpack(">f", raw)[0])
    if tid in (0x000C, 0x000F) and len(raw) == 16:
        return str(uuid.UUID(bytes=raw))
    if tid == 0x0010:
        return str(ipaddress.ip_address(raw))
    if tid == 0x000E:
        return str(int.from_bytes(raw, "big", signed=True))
    return "0x" + raw.hex()


class Connection:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ProbeError(f"cannot connect to {host}:{port}: {exc}") from exc
        self.sock.settimeout(timeout)
        self.stream = 0

    def close(self) -> None:
        self.sock.close()

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError as exc:
                raise ProbeError(f"read failed: {exc}") from exc
            if not chunk:
                raise ProbeError("connection closed by server")
            buf += chunk
        return bytes(buf)

    def request(self, opcode: int, body: bytes = b"") -> tuple[int, Reader]:
        self.stream = (self.stream + 1) % 32768
        header = struct.pack(">BBhBi", PROTOCOL_VERSION, 0, self.stream, opcode, len(body))
        try:
            self.sock.sendall(header + body)
        except OSError as exc:
            raise ProbeError(f"write failed: {exc}") from exc
        version, _flags, _stream, op, length = struct.unpack(">BBhBi", self._recv_exact(9))
        if version & 0x7F != PROTOCOL_VERSION:
            raise ProbeError(f"server answered with protocol version {version & 0x7F}")
        body_reader = Reader(self._recv_exact(length))
        if op == OP_ERROR:
            code = body_reader.int()
            raise ServerError(f"error 0x{code:04x}: {body_reader.string()}")
        return op, body_reader

    def handshake(self) -> dict[str, list[str]]:
        op, r = self.request(OP_OPTIONS)
        if op != OP_SUPPORTED:
            raise ProbeError(f"OPTIONS answered with opcode 0x{op:02x}, expected SUPPORTED")
        supported = r.string_multimap()
        body = struct.pack(">H", 1) + encode_string("CQL_VERSION") + encode_string("3.0.0")
        op, _ = self.request(OP_STARTUP, body)
        if op == OP_AUTHENTICATE:
            raise ProbeError("server requires authentication (expected AllowAllAuthenticator)")
        if op != OP_READY:
            raise ProbeError(f"STARTUP answered with opcode 0x{op:02x}, expected READY")
        return supported

    def query(self, cql: str, consistency: int) -> list[list[str]]:
        body = encode_long_string(cql) + struct.pack(">HB", consistency, 0)
        op, r = self.request(OP_QUERY, body)
        if op != OP_RESULT:
            raise ProbeError(f"QUERY answered with opcode 0x{op:02x}, expected RESULT")
        kind = r.int()
        if kind != 0x0002:  # Void, Set_keyspace, Prepared, Schema_change: no rows
            return []
        flags, ncols = r.int(), r.int()
        if flags & 0x0002:  # Has_more_pages: we asked for no paging, skip the state
            r.bytes()
        types = []
        if not flags & 0x0004:  # metadata present
            if flags & 0x0001:  # global table spec
                r.string(), r.string()
            for _ in range(ncols):
                if not flags & 0x0001:
                    r.string(), r.string()
                r.string()  # column name
                types.append(r.type_option())
        else:
            types = [(0x0003,)] * ncols
        return [[decode_value(types[c], r.bytes()) for c in range(ncols)]
                for _ in range(r.int())]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9042)
    ap.add_argument("--timeout", type=float, default=5.0, help="socket timeout, seconds")
    ap.add_argument("-e", "--query", action="append", default=[],
                    help="CQL statement to run after the handshake (repeatable)")
    ap.add_argument("--consistency", default="ONE", choices=sorted(CONSISTENCY))
    ap.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = ap.parse_args()

    try:
        conn = Connection(args.host, args.port, args.timeout)
        try:
            conn.handshake()
            version_rows = conn.query("SELECT release_version FROM system.local",
                                      CONSISTENCY["ONE"])
            if not args.quiet:
                release = version_rows[0][0] if version_rows else "?"
                print(f"READY {args.host}:{args.port} release_version={release}")
            for cql in args.query:
                for row in conn.query(cql, CONSISTENCY[args.consistency]):
                    print("\t".join(row))
        finally:
            conn.close()
    except ProbeError as exc:
        if not args.quiet:
            print(f"not ready: {exc}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"CQL error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
