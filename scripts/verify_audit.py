#!/usr/bin/env python3
"""Independent verifier of a kokuho-ledger audit export (docs/audit.md, audit.md).

Uses nothing but the Python standard library: SHA-256 from hashlib, RFC 8785 canonical JSON
and RFC 8032 Ed25519 verification written out below. It shares no code with the ledger.

    python3 scripts/verify_audit.py EXPORT.jsonl [--public-key BASE64]

Checks every entry's leaf hash and the linear chain, every checkpoint's Merkle root and chain
head at its size and its signature, and that every stream's sequences are 1..k without gaps.
Exit 0 when everything holds; otherwise exit 1 and name the first failing position.
"""

import base64
import hashlib
import json
import sys

# ---- RFC 8785 (JSON Canonicalization Scheme), for the values audit entries hold ----------


def canonical(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > 2**53 - 1:
            raise ValueError("integer outside the I-JSON range: %d" % value)
        return str(value)
    if isinstance(value, float):
        raise ValueError("audit entries hold no floating-point numbers")
    if isinstance(value, str):
        # json.dumps escapes exactly what ECMAScript's JSON.stringify does when told not to
        # escape non-ASCII: quote, backslash, control characters (short forms where they exist).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        # Property names sort by their UTF-16 code units.
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-16-be"))
        return "{" + ",".join(canonical(k) + ":" + canonical(v) for k, v in items) + "}"
    raise ValueError("unexpected JSON value %r" % (value,))


# ---- RFC 9162 Merkle tree ----------------------------------------------------------------


def sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(data):
    return sha256(b"\x00" + data)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


class Frontier:
    """The roots of the perfect subtrees that make up the first `size` leaves."""

    def __init__(self):
        self.size = 0
        self.nodes = []

    def push(self, leaf):
        h, s = leaf, self.size
        while s & 1:
            h = node_hash(self.nodes.pop(), h)
            s >>= 1
        self.nodes.append(h)
        self.size += 1

    def root(self):
        if not self.nodes:
            return sha256(b"")
        r = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            r = node_hash(left, r)
        return r


# ---- RFC 8032 Ed25519 verification (the reference code of its section 6) ------------------

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493


def _inv(x):
    return pow(x, P - 2, P)


D = -121665 * _inv(121666) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f, g * h, f * g, e * h)


def _mul(s, point):
    result = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            result = _add(result, point)
        point = _add(point, point)
        s >>= 1
    return result


def _equal(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * _inv(D * y * y + 1)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _decompress(s):
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


_GY = 4 * _inv(5) % P
_GX = _recover_x(_GY, 0)
G = (_GX, _GY, 1, _GX * _GY % P)


def ed25519_verify(public, message, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % Q
    return _equal(_mul(s, G), _add(r, _mul(h, a)))


def _self_test():
    # RFC 8032 section 7.1, TEST 1.
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert ed25519_verify(pk, b"", sig) and not ed25519_verify(pk, b"x", sig)
    # RFC 6962 reference roots: one leaf, and the two-leaf tree of "" and 00.
    f = Frontier()
    f.push(leaf_hash(b""))
    assert f.root().hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    f.push(leaf_hash(b"\x00"))
    assert f.root().hex() == "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
    assert canonical({"b": [1, "\n"], "a": None, "\u20ac": 1, "\U0001f600": 2, "\ufb33": 3}) == (
        '{"a":null,"b":[1,"\\n"],"\u20ac":1,"\U0001f600":2,"\ufb33":3}'
    )


# ---- The export ------------------------------------------------------------------------------


class Failed(Exception):
    def __init__(self, position, what):
        super().__init__("position %d: %s" % (position, what))
        self.position = position


def verify(path, pinned_key=None):
    with open(path, "rb") as f:
        header = json.loads(next(f))
        # The checkpoints close the export; read them first (entries are only skipped here).
        checkpoints = [json.loads(raw) for raw in f if raw.startswith(b'{"checkpoint"')]
    if header.get("format") != "kokuho-ledger-audit/1":
        raise Failed(0, "not a kokuho-ledger-audit/1 export")
    key_b64 = pinned_key or header["public_key"]
    if pinned_key and pinned_key != header["public_key"]:
        print("note: the export names key %s; verifying against the pinned key" % header["public_key"])
    public = base64.b64decode(key_b64, validate=True)
    at_size = {}
    for c in checkpoints:
        body = c["checkpoint"]
        if not ed25519_verify(public, canonical(body).encode("utf-8"), base64.b64decode(c["signature"], validate=True)):
            raise Failed(body["size"], "the checkpoint's signature does not verify")
        at_size[body["size"]] = body
    chain = bytes(32)
    frontier = Frontier()
    last_sequence = {}
    expected = 1
    with open(path, "rb") as f:
        next(f)
        for raw in f:
            if raw.startswith(b'{"checkpoint"'):
                break
            record = json.loads(raw)
            entry = record["entry"]
            position = entry["position"]
            if position != expected:
                raise Failed(expected, "the export jumps to position %d (an entry is missing)" % position)
            leaf = leaf_hash(canonical(entry).encode("utf-8"))
            if leaf.hex() != record["leaf_hash"]:
                raise Failed(position, "the leaf hash does not match the entry")
            chain = sha256(chain + leaf)
            if chain.hex() != record["chain_hash"]:
                raise Failed(position, "the chain hash does not match")
            frontier.push(leaf)
            stream = (entry["stream"], entry["stream_id"])
            seq, previous = entry["sequence"], last_sequence.get(stream, 0)
            if seq != previous + 1:
                raise Failed(position, "stream %s/%s: sequence %d follows %d" % (stream[0], stream[1], seq, previous))
            last_sequence[stream] = seq
            body = at_size.get(position)
            if body is not None:
                if frontier.root().hex() != body["root"]:
                    raise Failed(position, "the checkpoint's Merkle root does not match the entries")
                if chain.hex() != body["chain_head"]:
                    raise Failed(position, "the checkpoint's chain head does not match the entries")
            expected += 1
    beyond = [size for size in at_size if size >= expected]
    if beyond:
        raise Failed(min(beyond), "a checkpoint lies beyond the exported entries")
    return expected - 1, len(checkpoints), len(last_sequence)


def main(argv):
    args = argv[1:]
    key = None
    if "--public-key" in args:
        i = args.index("--public-key")
        key = args[i + 1]
        del args[i : i + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    _self_test()
    try:
        entries, checkpoints, streams = verify(args[0], key)
    except Failed as e:
        print("FAILED at %s" % e)
        return 1
    print("ok: %d entries, %d checkpoints, %d streams" % (entries, checkpoints, streams))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
