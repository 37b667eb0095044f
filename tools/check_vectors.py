#!/usr/bin/env python3
"""An independent implementation of the foundation parts of PROTOCOL.md, checked against the
vectors in testdata/ that the Rust implementation generated.

Written from PROTOCOL.md alone, with Python's hashlib plus the `cryptography` and `argon2-cffi`
packages (`python3 -m pip install cryptography argon2-cffi`). It re-derives: node ids, the
safety number and its QR text, the contact URI (byte for byte, signature included), the
node.key file (decrypts it, and re-encrypts it with the recorded salt and nonce to the same bytes),
the DHT records (rebuilds each body from its fields and verifies its signature), and the
mailbox key, item and delete request of PROTOCOL.md section 11 (the same way).
Exit code 0 when everything matches.
"""
import base64
import hashlib
import ipaddress
import json
import pathlib
import struct
import sys
import urllib.parse

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import serialization

TESTDATA = pathlib.Path(__file__).resolve().parent.parent / "testdata"
failures = []


def check(what, got, want):
    if got != want:
        failures.append(what)
        print(f"MISMATCH {what}:\n  got  {got!r}\n  want {want!r}")
    else:
        print(f"ok  {what}")


def public_key(seed: bytes) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def node_id(pk: bytes) -> bytes:
    return hashlib.sha256(pk).digest()


# --- Safety number -------------------------------------------------------------------------
def fingerprint(pk: bytes) -> bytes:
    h = hashlib.sha512(b"\x00\x00" + pk + node_id(pk)).digest()
    for _ in range(1, 5200):
        h = hashlib.sha512(h + pk).digest()
    return h


def digits(fp: bytes) -> str:
    return "".join("%05d" % (int.from_bytes(fp[i * 5:i * 5 + 5], "big") % 100000) for i in range(6))


sn = json.loads((TESTDATA / "safety_number.json").read_text())
pk_a = public_key(bytes.fromhex(sn["seed_a"]))
pk_b = public_key(bytes.fromhex(sn["seed_b"]))
check("public key A", pk_a.hex(), sn["public_key_a"])
check("node id A", node_id(pk_a).hex(), sn["node_id_a"])
check("node id B", node_id(pk_b).hex(), sn["node_id_b"])
fa, fb = fingerprint(pk_a), fingerprint(pk_b)
number = "".join(sorted([digits(fa), digits(fb)]))
check("safety number", " ".join(number[i:i + 5] for i in range(0, 60, 5)), sn["safety_number"])
check("safety number QR text", "DP2PTCS-SN:1:" + fa[:32].hex().upper() + ":" + fb[:32].hex().upper(),
      sn["qr_text_from_a"])


# --- Contact URI ---------------------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pct(text: str) -> str:
    return urllib.parse.quote(text, safe="-._~")


def contact_uri(seed: bytes, name, addrs) -> str:
    pk = public_key(seed)
    signed = b"dp2ptcs contact v1\x00" + pk
    n = (name or "").encode()
    signed += bytes([len(n)]) + n + bytes([len(addrs)])
    for a in addrs:
        signed += bytes([len(a.encode())]) + a.encode()
    sig = Ed25519PrivateKey.from_private_bytes(seed).sign(signed)
    uri = "dp2ptcs://contact?v=1&key=" + b64url(pk)
    if name is not None:
        uri += "&name=" + pct(name)
    for a in addrs:
        uri += "&addr=" + pct(a)
    return uri + "&sig=" + b64url(sig)


cu = json.loads((TESTDATA / "contact_uri.json").read_text())
check("contact URI A", contact_uri(bytes.fromhex(cu["seed_a"]), "Alpha 1",
                                   ["192.0.2.7:4433", "[2001:db8::7]:4433"]), cu["uri_a"])
check("contact URI B", contact_uri(bytes.fromhex(cu["seed_b"]), None, []), cu["uri_b"])
# The signature verifies with an independent Ed25519 implementation.
q = urllib.parse.parse_qs(cu["uri_a"].split("?", 1)[1])
pad = lambda s: s + "=" * (-len(s) % 4)
Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(pad(q["key"][0])))

# --- node.key ------------------------------------------------------------------------------
ks = json.loads((TESTDATA / "keystore.json").read_text())
f = json.loads(ks["file"])
kdf = f["kdf"]
salt, nonce = base64.b64decode(f["salt"]), base64.b64decode(f["nonce"])
key = hash_secret_raw(ks["passphrase"].encode(), salt, time_cost=kdf["t_cost"], memory_cost=kdf["m_cost"],
                      parallelism=kdf["p_cost"], hash_len=32, type=Type.ID, version=19)
plain = AESGCM(key).decrypt(nonce, base64.b64decode(f["ciphertext"]), b"dp2ptcs node.key v1")
check("keystore seed", plain[:32].hex(), ks["ed25519_seed"])
check("keystore database key", plain[32:].hex(), ks["database_key"])
again = AESGCM(key).encrypt(nonce, plain, b"dp2ptcs node.key v1")
rebuilt = json.dumps({
    "version": 1,
    "kdf": {"algorithm": "argon2id", "version": 19, "m_cost": kdf["m_cost"], "t_cost": kdf["t_cost"],
            "p_cost": kdf["p_cost"]},
    "salt": base64.b64encode(salt).decode(),
    "nonce": base64.b64encode(nonce).decode(),
    "ciphertext": base64.b64encode(again).decode(),
}, indent=2) + "\n"
check("keystore file bytes", rebuilt, ks["file"])


# --- DHT records (PROTOCOL.md section 10.2) ------------------------------------------------
def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def peer_payload(p) -> bytes:
    out = bytes([len(p["addresses"])])
    for a in p["addresses"]:
        ip = ipaddress.ip_address(a["ip"])
        out += bytes([4 if ip.version == 4 else 6]) + ip.packed + struct.pack(">H", a["port"])
    if p["mix_key"] is None:
        return out + b"\x00"
    return out + b"\x01" + bytes.fromhex(p["mix_key"])


def bundle_payload(p, what) -> bytes:
    ik, spk = bytes.fromhex(p["identity_key"]), bytes.fromhex(p["signed_prekey"])
    sig = bytes.fromhex(p["signed_prekey_signature"])
    check(f"{what}: signed prekey from its private key", x25519_public(bytes.fromhex(p["signed_prekey_private"])), spk)
    try:
        Ed25519PublicKey.from_public_bytes(ik).verify(
            sig, b"DP2PTCS_SignedPreKey_v1" + struct.pack(">I", p["signed_prekey_id"]) + spk)
        check(f"{what}: signed prekey signature verifies", True, True)
    except InvalidSignature:
        check(f"{what}: signed prekey signature verifies", False, True)
    out = b"\x01" + ik + struct.pack(">I", p["signed_prekey_id"]) + spk + sig
    if p.get("one_time_prekey_id") is None:
        return out + b"\x00"
    opk = bytes.fromhex(p["one_time_prekey"])
    check(f"{what}: one-time prekey from its private key",
          x25519_public(bytes.fromhex(p["one_time_prekey_private"])), opk)
    return out + b"\x01" + struct.pack(">I", p["one_time_prekey_id"]) + opk


dr = json.loads((TESTDATA / "dht_record.json").read_text())
context = dr["signature_context"].encode()
check("DHT record signature context", context, b"dp2ptcs/v1/dht-record")
for name, build in [("peer_record", peer_payload), ("prekey_bundle_record", bundle_payload)]:
    r = dr[name]
    seed = bytes.fromhex(r["seed"])
    owner = public_key(seed)
    check(f"{name}: owner public key", owner.hex(), r["owner_public_key"])
    check(f"{name}: key (node id of the owner)", node_id(owner).hex(), r["key_owner_node_id"])
    if build is bundle_payload:
        check(f"{name}: bundle identity is the owner", r["payload"]["identity_key"], owner.hex())
        payload = bundle_payload(r["payload"], name)
    else:
        payload = peer_payload(r["payload"])
    body = (bytes([1, r["kind"]]) + owner + struct.pack(">QQH", r["sequence"], r["expires_at_ms"], len(payload))
            + payload)
    check(f"{name}: body rebuilt from its fields", body.hex(), r["body"])
    sig = bytes.fromhex(r["signature"])
    try:
        Ed25519PublicKey.from_public_bytes(owner).verify(sig, context + body)
        check(f"{name}: signature over context || body verifies", True, True)
    except InvalidSignature:
        check(f"{name}: signature over context || body verifies", False, True)
    # Ed25519 is deterministic: signing again gives the same bytes; the record is body || signature.
    check(f"{name}: signature", Ed25519PrivateKey.from_private_bytes(seed).sign(context + body).hex(), r["signature"])
    check(f"{name}: record bytes", (body + sig).hex(), r["record"])
    check(f"{name}: at most 1024 bytes", len(body + sig) <= 1024, True)

mb = json.loads((TESTDATA / "mailbox.json").read_text())
check("mailbox contexts", (mb["key_context"], mb["item_context"], mb["delete_context"]),
      ("dp2ptcs/v1/mailbox", "dp2ptcs/v1/mailbox-item", "dp2ptcs/v1/mailbox-delete"))
recipient_seed = bytes.fromhex(mb["recipient_seed"])
recipient_pk = public_key(recipient_seed)
recipient_id = node_id(recipient_pk)
check("mailbox: recipient public key", recipient_pk.hex(), mb["recipient_public_key"])
check("mailbox: recipient node id", recipient_id.hex(), mb["recipient_node_id"])
check("mailbox: key = SHA-256(context || recipient id)",
      hashlib.sha256(b"dp2ptcs/v1/mailbox" + recipient_id).hexdigest(), mb["mailbox_key"])


def check_signed(what, seed, signer, context, body, r, field):
    check(f"{what}: body rebuilt from its fields", body.hex(), r["body"])
    sig = bytes.fromhex(r["signature"])
    try:
        Ed25519PublicKey.from_public_bytes(signer).verify(sig, context + body)
        check(f"{what}: signature over context || body verifies", True, True)
    except InvalidSignature:
        check(f"{what}: signature over context || body verifies", False, True)
    check(f"{what}: signature", Ed25519PrivateKey.from_private_bytes(seed).sign(context + body).hex(),
          r["signature"])
    check(f"{what}: bytes", (body + sig).hex(), r[field])


it = mb["item"]
sender_seed = bytes.fromhex(it["sender_seed"])
sender_pk = public_key(sender_seed)
check("mailbox item: sender public key", sender_pk.hex(), it["sender_public_key"])
payload = bytes.fromhex(it["payload"])
body = (b"\x01" + sender_pk + recipient_id + bytes.fromhex(it["message_id"])
        + struct.pack(">QI", it["expires_at_ms"], len(payload)) + payload)
check_signed("mailbox item", sender_seed, sender_pk, b"dp2ptcs/v1/mailbox-item", body, it, "item")

de = mb["delete"]
ids = b"".join(bytes.fromhex(i) for i in de["message_ids"])
body = b"\x01" + recipient_pk + struct.pack(">QH", de["issued_at_ms"], len(de["message_ids"])) + ids
check_signed("mailbox delete", recipient_seed, recipient_pk, b"dp2ptcs/v1/mailbox-delete", body, de,
             "delete")

if failures:
    print(f"{len(failures)} checks failed: {', '.join(failures)}")
    sys.exit(1)
print("all foundation vectors match an independent implementation")
