"""Signed model-update files ("neural diffs"): the format, how to make one, how to read one.

A diff turns one exact model into another. Models are identified by :func:`weights_digest`, a
SHA-256 over the tensors and metadata in canonical order (the safetensors writer orders its
metadata differently from one call to the next, so the file's own bytes cannot serve).
The device trusts a diff only if it is signed with the update key and names the model it has;
after applying it checks that the result hashes to what the diff promises, so a diff that
decodes to anything else is rejected before the device switches models.

Layout (little-endian)::

    b"EASRDIFF" | u16 version | u32 header length | header JSON (UTF-8)
    | u64 payload length | payload (zstd) | 64-byte Ed25519 signature of everything before it

The header names the method, the base and result hashes, and per tensor its encoding and the
byte range of its data inside the decompressed payload. Encodings:

- ``sparse``: positions of changed weights (gaps between sorted flat indices, uint32) and their
  changes quantised to int8 with one float32 scale per tensor;
- ``dense``: the whole new tensor as float32 (the "ship the model" baseline, compressed);
- ``hash``: HashedNets-style; each weight's change is ``sign(i) * bucket[h(i)]`` with ``h`` and
  ``sign`` hashes of its position, the tensor name and a seed, so only the buckets (float32)
  travel. :func:`hash_index` is the one definition both training and the device use;
- ``lowrank``: LoRA-style; the change is ``B @ A`` with rank :func:`lowrank_rank` (the same
  share of the matrix's weights as a hash diff's buckets), float32 ``B`` then ``A``. A model
  trained as a low-rank diff ships exactly; any other change is truncated by SVD;
- ``binary`` (a method of its own): the generic baseline, ``zstd --patch-from`` on the weights.
  The new model's canonical bytes (every tensor in sorted order) compressed with the base's
  canonical bytes as a raw-content dictionary, with a window that covers both, so it is a
  binary delta that knows nothing about weights.

numpy, zstandard and cryptography only: this module runs on the device.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from safetensors.numpy import load_file, save

MAGIC = b"EASRDIFF"
VERSION = 1
SIG_LEN = 64
METHODS = ("sparse", "dense", "hash", "lowrank", "binary")
_P = 2_147_483_647  # 2^31 - 1: products of two values below it fit in int64


class DiffError(ValueError):
    """A diff that is malformed, tampered with, unsigned by the update key, or for another base."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- keys -----------------------------------------------------------------------------------
def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    if len(data) != 32:
        raise DiffError(f"an Ed25519 private key is 32 raw bytes, got {len(data)}")
    return Ed25519PrivateKey.from_private_bytes(data)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    if len(data) != 32:
        raise DiffError(f"an Ed25519 public key is 32 raw bytes, got {len(data)}")
    return Ed25519PublicKey.from_public_bytes(data)


# -- weights --------------------------------------------------------------------------------
def serialize_weights(weights: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    return save({k: np.ascontiguousarray(weights[k]) for k in sorted(weights)}, metadata)


def weights_digest(weights: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """SHA-256 of a model's content: metadata, then every tensor's name, dtype, shape and
    bytes, in sorted order. Equal for equal models however their files were written."""
    h = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(weights):
        a = np.ascontiguousarray(weights[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_digest(path: Path) -> str:
    return weights_digest(*read_weights(path))


def read_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
    return load_file(str(path)), meta


# -- encoding -------------------------------------------------------------------------------
def _encode_sparse(delta: np.ndarray, density: float | None) -> tuple[dict[str, Any], bytes]:
    """The ``density`` share of largest changes (None: every non-zero change), int8."""
    flat = delta.astype(np.float32).ravel()
    if density is None:
        idx = np.flatnonzero(flat)
    else:
        k = int(round(density * flat.size))
        if k >= flat.size:
            idx = np.arange(flat.size)
        else:
            idx = np.sort(np.argpartition(-np.abs(flat), k - 1)[:k]) if k else flat[:0]
    if len(idx) == 0 or not np.any(flat):
        return {"encoding": "sparse", "count": 0, "scale": 0.0}, b""
    k = len(idx)
    vals = flat[idx]
    scale = float(np.abs(vals).max() / 127.0) or 1.0
    q = np.clip(np.round(vals / scale), -127, 127).astype(np.int8)
    gaps = np.diff(idx, prepend=0).astype(np.uint32)
    return {"encoding": "sparse", "count": int(k), "scale": scale}, gaps.tobytes() + q.tobytes()


def _decode_sparse(meta: dict[str, Any], data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    out = np.zeros(n, dtype=np.float32)
    count = int(meta["count"])
    if count:
        if len(data) != 5 * count:
            raise DiffError(f"sparse tensor data is {len(data)} bytes, expected {5 * count}")
        idx = np.cumsum(np.frombuffer(data[: 4 * count], dtype=np.uint32).astype(np.int64))
        if idx[-1] >= n:
            raise DiffError("sparse index outside the tensor")
        out[idx] = np.frombuffer(data[4 * count :], dtype=np.int8).astype(np.float32) * float(
            meta["scale"]
        )
    return out.reshape(shape)


def hash_index(name: str, n: int, buckets: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket (int64) and sign (float32, +-1) of each of a tensor's ``n`` flat positions."""
    key = (zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1)) % _P
    a1, c1 = 1 + key % (_P - 1), (key * 7919) % _P
    a2, c2 = 1 + (key * 31337) % (_P - 1), (key * 104729) % _P
    i = np.arange(n, dtype=np.int64)
    idx = ((a1 * i + c1) % _P) % buckets
    sign = 1.0 - 2.0 * (((a2 * i + c2) % _P) & 1)
    return idx, sign.astype(np.float32)


def hash_buckets(delta: np.ndarray, idx: np.ndarray, sign: np.ndarray, buckets: int) -> np.ndarray:
    """Least-squares buckets for ``delta`` under the hash ``(idx, sign)`` of
    :func:`hash_index`: the mean of sign * delta over each bucket (exact when ``delta`` was
    trained under the same hash)."""
    total = np.bincount(idx, weights=sign * delta.ravel(), minlength=buckets)
    count = np.bincount(idx, minlength=buckets)
    return (total / np.maximum(count, 1)).astype(np.float32)


def lowrank_rank(shape: tuple[int, ...], fraction: float) -> int:
    """Rank of a low-rank change to a matrix of ``shape`` (rows × the rest) whose two factors
    hold ``fraction`` of its weights, at least 1: the one definition training and diffs use."""
    rows = int(shape[0])
    cols = int(np.prod(shape[1:]))
    return max(1, min(rows, cols, round(fraction * rows * cols / (rows + cols))))


def lowrank_factors(delta: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``B`` (rows × rank) and ``A`` (rank × cols) with ``B @ A`` the best rank-``rank``
    approximation of ``delta`` (its 2-D view), by SVD."""
    m = delta.reshape(delta.shape[0], -1).astype(np.float64)
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    b = (u[:, :rank] * s[:rank]).astype(np.float32)
    return b, vt[:rank].astype(np.float32)


def canonical_bytes(weights: dict[str, np.ndarray]) -> bytes:
    """Every tensor's bytes in sorted name order: what the binary delta works on."""
    return b"".join(np.ascontiguousarray(weights[k]).tobytes() for k in sorted(weights))


def _window_log(n: int) -> int:
    return min(31, max(20, int(np.ceil(np.log2(max(2, n))))))


def _binary_delta(base: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> tuple[list, bytes]:
    ref, target = canonical_bytes(base), canonical_bytes(new)
    wlog = _window_log(len(ref) + len(target))
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=wlog)
    dict_ = zstandard.ZstdCompressionDict(ref, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    data = zstandard.ZstdCompressor(dict_data=dict_, compression_params=params).compress(target)
    tensors = [
        {"name": k, "shape": list(new[k].shape), "dtype": new[k].dtype.str,
         "encoding": "binary", "window_log": wlog}
        for k in sorted(new)
    ]  # fmt: skip
    return tensors, data


def _apply_binary(
    base: dict[str, np.ndarray], header: dict[str, Any], payload: bytes
) -> dict[str, np.ndarray]:
    tensors = header["tensors"]
    wlog = int(tensors[0]["window_log"]) if tensors else 20
    if not 20 <= wlog <= 31:
        raise DiffError(f"binary delta window 2^{wlog} out of range")
    dict_ = zstandard.ZstdCompressionDict(
        canonical_bytes(base), dict_type=zstandard.DICT_TYPE_RAWCONTENT
    )
    try:
        data = zstandard.ZstdDecompressor(dict_data=dict_, max_window_size=1 << wlog).decompress(
            payload
        )
    except zstandard.ZstdError as exc:
        raise DiffError(f"binary delta does not decode against this base: {exc}") from None
    out, pos = {}, 0
    for t in tensors:
        dtype = np.dtype(t["dtype"])
        n = int(np.prod(t["shape"])) * dtype.itemsize
        if pos + n > len(data):
            raise DiffError("binary delta is shorter than its tensors")
        out[t["name"]] = np.frombuffer(data[pos : pos + n], dtype=dtype).reshape(t["shape"]).copy()
        pos += n
    if pos != len(data):
        raise DiffError("binary delta is longer than its tensors")
    return out


def apply_payload(
    base: dict[str, np.ndarray], header: dict[str, Any], payload: bytes
) -> dict[str, np.ndarray]:
    """Decode every tensor of a verified diff onto ``base`` (which is left unchanged)."""
    if header["method"] == "binary":
        return _apply_binary(base, header, payload)
    out = dict(base)
    for t in header["tensors"]:
        name, shape = t["name"], tuple(t["shape"])
        if name not in base or tuple(base[name].shape) != shape:
            raise DiffError(f"tensor {name!r} {shape} does not match the base model")
        if base[name].dtype != np.float32:
            raise DiffError(f"tensor {name!r} is {base[name].dtype}; diffs change float32 weights")
        start, length = int(t["offset"]), int(t["length"])
        if start < 0 or start + length > len(payload):
            raise DiffError(f"tensor {name!r} data lies outside the payload")
        data = payload[start : start + length]
        if t["encoding"] == "sparse":
            out[name] = base[name] + _decode_sparse(t, data, shape)
        elif t["encoding"] == "hash":
            k = int(t["buckets"])
            if k < 1 or length != 4 * k:
                raise DiffError(f"hash tensor {name!r}: {length} bytes for {k} buckets")
            n = int(np.prod(shape)) if shape else 1
            idx, sign = hash_index(name, n, k, int(t["seed"]))
            b = np.frombuffer(data, dtype=np.float32)
            out[name] = base[name] + (sign * b[idx]).reshape(shape)
        elif t["encoding"] == "lowrank":
            rows, cols = (shape[0], int(np.prod(shape[1:]))) if len(shape) >= 2 else (0, 0)
            r = int(t["rank"])
            if not rows or r < 1 or length != 4 * r * (rows + cols):
                raise DiffError(f"low-rank tensor {name!r}: {length} bytes for rank {r}")
            f = np.frombuffer(data, dtype=np.float32)
            b, a = f[: rows * r].reshape(rows, r), f[rows * r :].reshape(r, cols)
            out[name] = base[name] + (b @ a).reshape(shape)
        elif t["encoding"] == "dense":
            if length != 4 * int(np.prod(shape) if shape else 1):
                raise DiffError(f"dense tensor {name!r} has {length} bytes")
            out[name] = np.frombuffer(data, dtype=np.float32).reshape(shape).copy()
        else:
            raise DiffError(f"tensor {name!r}: unknown encoding {t['encoding']!r}")
    return out


# -- files ----------------------------------------------------------------------------------
@dataclass
class Diff:
    header: dict[str, Any]
    payload: bytes  # decompressed
    size: int  # bytes on the wire

    @property
    def base_sha256(self) -> str:
        return self.header["base_sha256"]

    @property
    def result_sha256(self) -> str:
        return self.header["result_sha256"]


def make_diff(
    base_file: Path,
    new_file: Path,
    key: Ed25519PrivateKey,
    method: str = "sparse",
    density: float | None = 0.1,
    info: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[bytes, bytes]:
    """A signed diff from ``base_file`` to (an approximation of) ``new_file``.

    ``sparse`` keeps the ``density`` share of each tensor's largest changes (None: every
    changed weight, for a model trained as a sparse diff), quantised to int8: the device's
    result is then base + that, not exactly ``new_file``. For ``hash`` and ``lowrank``
    ``density`` is the share of a matrix's weights that its buckets or factors hold (default
    2 %). Returns the diff file's
    bytes and the resulting ``model.safetensors`` bytes (whose :func:`weights_digest` the
    header names).
    """
    if method not in METHODS:
        raise ValueError(f"unknown diff method {method!r} ({', '.join(METHODS)})")
    if density is not None and not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    base, meta = read_weights(base_file)
    new, new_meta = read_weights(new_file)
    if set(base) != set(new) or any(base[k].shape != new[k].shape for k in base):
        raise ValueError("the two models differ in tensor names or shapes; a diff cannot")
    tensors, chunks, offset = [], [], 0
    if method == "binary":
        tensors, payload_bin = _binary_delta(base, new)
        chunks = [payload_bin]
    for name in sorted(base) if method != "binary" else []:
        if base[name].dtype != np.float32 or np.array_equal(base[name], new[name]):
            continue
        if method == "sparse":
            t, data = _encode_sparse(new[name] - base[name], density)
        elif method == "hash":
            # tensors trained under the hash ship as buckets; any other change (biases, norms
            # trained freely) ships whole, so the device gets exactly the trained model
            delta = new[name] - base[name]
            k = max(1, round((density or 0.02) * base[name].size))
            idx, sign = hash_index(name, delta.size, k, seed)
            b = hash_buckets(delta, idx, sign, k)
            if np.allclose(sign * b[idx], delta.ravel(), rtol=1e-4, atol=1e-6):
                t, data = {"encoding": "hash", "buckets": k, "seed": seed}, b.tobytes()
            else:
                t, data = {"encoding": "dense"}, np.ascontiguousarray(new[name]).tobytes()
        elif method == "lowrank" and base[name].ndim >= 2:
            rank = lowrank_rank(base[name].shape, density or 0.02)
            b, a = lowrank_factors(new[name] - base[name], rank)
            t, data = {"encoding": "lowrank", "rank": rank}, b.tobytes() + a.tobytes()
        else:
            t, data = {"encoding": "dense"}, np.ascontiguousarray(new[name], np.float32).tobytes()
        if t.get("count", 1) == 0:
            continue
        tensors.append(
            {"name": name, "shape": list(base[name].shape), "offset": offset,
             "length": len(data), **t}
        )  # fmt: skip
        chunks.append(data)
        offset += len(data)
    payload = b"".join(chunks)
    header = {
        "method": method,
        "base_sha256": weights_digest(base, meta),
        "tensors": tensors,
        # the result's safetensors metadata (model config etc.), so that the device writes
        # exactly the file whose hash the diff promises
        "metadata": {**meta, **new_meta},
        "info": info or {},
    }
    result = apply_payload(base, header, payload)
    header["result_sha256"] = weights_digest(result, header["metadata"])
    header["payload_sha256"] = sha256_bytes(payload)
    return _write(header, payload, key), serialize_weights(result, header["metadata"])


def _write(header: dict[str, Any], payload: bytes, key: Ed25519PrivateKey) -> bytes:
    head = json.dumps(header, sort_keys=True).encode()
    body = zstandard.ZstdCompressor(level=19).compress(payload)
    signed = (
        MAGIC + struct.pack("<HI", VERSION, len(head)) + head + struct.pack("<Q", len(body)) + body
    )
    return signed + key.sign(signed)


def read_diff(data: bytes, public_key: Ed25519PublicKey) -> Diff:
    """Parse and verify a diff; any defect raises :class:`DiffError` with the reason."""
    if len(data) < len(MAGIC) + 6 + 8 + SIG_LEN:
        raise DiffError(f"too short to be a diff ({len(data)} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise DiffError("not an edgeasr diff (bad magic)")
    version, head_len = struct.unpack_from("<HI", data, len(MAGIC))
    if version != VERSION:
        raise DiffError(f"diff version {version} is not supported (expected {VERSION})")
    pos = len(MAGIC) + 6
    if pos + head_len + 8 > len(data) - SIG_LEN:
        raise DiffError("truncated diff (header)")
    head = data[pos : pos + head_len]
    pos += head_len
    (body_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    if pos + body_len + SIG_LEN != len(data):
        raise DiffError(
            f"truncated or padded diff ({len(data)} bytes, expected {pos + body_len + SIG_LEN})"
        )
    signed, signature = data[: pos + body_len], data[pos + body_len :]
    try:
        public_key.verify(signature, signed)
    except InvalidSignature:
        raise DiffError(
            "signature does not verify: tampered, or not signed by the update key"
        ) from None
    try:
        header = json.loads(head)
        payload = zstandard.ZstdDecompressor().decompress(data[pos : pos + body_len])
    except (json.JSONDecodeError, zstandard.ZstdError) as exc:
        raise DiffError(f"malformed diff body: {exc}") from None
    if sha256_bytes(payload) != header.get("payload_sha256"):
        raise DiffError("payload checksum mismatch")
    for key in ("method", "base_sha256", "result_sha256", "tensors", "metadata"):
        if key not in header:
            raise DiffError(f"diff header lacks {key!r}")
    return Diff(header, payload, len(data))
