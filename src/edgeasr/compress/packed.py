"""The packed model file: what a device downloads — low-bit codes, zero maps, zstd, SHA-256.

Layout (little-endian)::

    magic b"EASRPACK" | u16 version | u16 reserved | u32 header length | header (UTF-8 JSON,
    zstd) | u64 body length | body (zstd) | SHA-256 of everything before it (32 bytes)

The header holds the model config, feature statistics' place, the decoding defaults and one
entry per tensor (shape, encoding, byte ranges in the decompressed body). Compressible weights
(see ``compressible_weights``) are stored as per-row scales (float16: ``compress.quant`` keeps
every scale a float16 number, so this is exact), a bitmap over blocks that hold any non-zero
code, and the codes of those blocks as unsigned offsets ``q + qmax`` — either one per byte or
bit-packed at the tensor's width, whichever zstd makes smaller (zstd's Huffman stage
entropy-codes byte-aligned codes well; bit-packing wins only when codes are near-uniform).
All-zero tensors (e.g. an LSTM's second bias once folded into the first, see
``convert.pack_model``) are stored as their shape alone. Everything else (biases, norms, feature
statistics) is float16 by default (``float_bits``), whose rounding (2^-11 relative) is far below
the weights' quantisation error; values outside float16's range keep float32. The tokenizer
rides along so the file alone is a complete model.

Version 2 (float16 scales and floats, all-zero tensors, compressed header) replaced version 1
(float32, plain header), which this reader refuses: repack such a file from its model package.

Decoding needs only numpy and zstandard, so the device unpacks without torch; the checksum and
every length are verified before anything is used.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from edgeasr.fileio import atomic_write_bytes

MAGIC = b"EASRPACK"
VERSION = 2
FORMAT = "edgeasr-packed"
_PREFIX = struct.Struct("<8sHHI")
_BODY_LEN = struct.Struct("<Q")
_DIGEST = 32
ZSTD_LEVEL = 19
_MAX_HEADER = 1 << 24  # decompressed header bytes: a bound against decompression bombs
_F16_MAX = float(np.finfo(np.float16).max)


class PackedModelError(ValueError):
    """A packed model file that is truncated, corrupt, tampered with or of another version."""


@dataclass
class QuantTensor:
    """One weight matrix as integer codes: ``w = codes * scales[row]``."""

    codes: np.ndarray  # int32, the tensor's shape
    scales: np.ndarray  # float32, (rows,)
    bits: int
    block: tuple[int, int] = (1, 1)

    def dense(self) -> np.ndarray:
        shape = (-1,) + (1,) * (self.codes.ndim - 1)
        return self.codes.astype(np.float32) * self.scales.reshape(shape)


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _blocks(codes2d: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """(R, C) → (R/br, C/bc, br*bc): each block's codes in row-major order."""
    br, bc = block
    R, C = codes2d.shape
    return (
        codes2d.reshape(R // br, br, C // bc, bc)
        .transpose(0, 2, 1, 3)
        .reshape(R // br, C // bc, -1)
    )


def _unblocks(blocks: np.ndarray, block: tuple[int, int], R: int, C: int) -> np.ndarray:
    br, bc = block
    return blocks.reshape(R // br, C // bc, br, bc).transpose(0, 2, 1, 3).reshape(R, C)


def _bitpack(values: np.ndarray, bits: int) -> bytes:
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(
        ((values[:, None].astype(np.uint32) >> shifts) & 1).astype(np.uint8)
    ).tobytes()


def _bitunpack(data: bytes, bits: int, n: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: n * bits]
    if flat.size != n * bits:
        raise PackedModelError("packed values are shorter than their count")
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint32)
    return flat.reshape(n, bits).astype(np.uint32) @ weights


def _zstd_size(data: bytes) -> int:
    return len(zstandard.ZstdCompressor(level=3).compress(data))


class _Body:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        self.parts.append(data)
        self.size += len(data)
        return [self.size - len(data), len(data)]


def _encode_quant(t: QuantTensor, body: _Body) -> dict:
    R = t.codes.shape[0]
    codes2d = t.codes.reshape(R, -1)
    blocks = _blocks(codes2d, t.block)
    nonzero = (blocks != 0).any(axis=2)
    values = (blocks[nonzero].reshape(-1) + _qmax(t.bits)).astype(np.uint32)
    if values.size and (values.min() < 0 or values.max() > 2 * _qmax(t.bits)):
        raise ValueError(f"codes out of range for {t.bits} bits")
    scales = t.scales.astype("<f2")
    if not np.array_equal(scales.astype(np.float32), t.scales):
        raise ValueError("scales must be float16 numbers (see compress.quant.channel_scale)")
    as_bytes = values.astype(np.uint8).tobytes() if t.bits <= 8 else values.astype("<u2").tobytes()
    packed = _bitpack(values, t.bits)
    use_packed = _zstd_size(packed) < _zstd_size(as_bytes)
    return {
        "encoding": "quant",
        "bits": t.bits,
        "block": list(t.block),
        "nonzero_blocks": int(nonzero.sum()),
        "values_layout": "bitpacked" if use_packed else "bytes",
        "scales": body.add(scales.tobytes()),
        "zero_map": body.add(np.packbits(nonzero.reshape(-1)).tobytes()),
        "values": body.add(packed if use_packed else as_bytes),
    }


def _encode_float(arr: np.ndarray, float_bits: int, body: _Body) -> dict:
    if arr.size and not arr.any() and not np.signbit(arr).any():
        return {"encoding": "zeros"}
    if float_bits == 16 and np.isfinite(arr).all() and np.abs(arr).max(initial=0) <= _F16_MAX:
        return {"encoding": "float16", "data": body.add(arr.astype("<f2").tobytes())}
    return {"encoding": "float32", "data": body.add(arr.tobytes())}


def pack(
    tensors: dict[str, np.ndarray | QuantTensor],
    meta: dict,
    tokenizer: bytes,
    out: str | Path,
    float_bits: int = 16,
) -> int:
    """Write the packed file; returns its size in bytes. ``meta`` goes into the header as is;
    tensors that are not quantised are stored at ``float_bits`` (16, or 32 for byte-exact)."""
    if float_bits not in (16, 32):
        raise ValueError(f"float_bits must be 16 or 32, got {float_bits}")
    body = _Body()
    entries = []
    for name, t in tensors.items():
        if isinstance(t, QuantTensor):
            e = _encode_quant(t, body)
            shape = list(t.codes.shape)
        else:
            arr = np.ascontiguousarray(t, dtype="<f4")
            shape = list(arr.shape)
            e = _encode_float(arr, float_bits, body)
        entries.append({"name": name, "shape": shape, **e})
    header = {
        "format": FORMAT,
        "version": VERSION,
        "meta": meta,
        "tokenizer": body.add(tokenizer),
        "tensors": entries,
        "body_bytes": body.size,
    }
    raw = b"".join(body.parts)
    zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    hb = zc.compress(json.dumps(header, separators=(",", ":")).encode())
    comp = zc.compress(raw)
    blob = _PREFIX.pack(MAGIC, VERSION, 0, len(hb)) + hb + _BODY_LEN.pack(len(comp)) + comp
    blob += hashlib.sha256(blob).digest()
    atomic_write_bytes(Path(out), blob)
    return len(blob)


@dataclass
class PackedModel:
    meta: dict
    tokenizer: bytes
    tensors: dict[str, np.ndarray | QuantTensor]

    def dense(self) -> dict[str, np.ndarray]:
        return {n: t.dense() if isinstance(t, QuantTensor) else t for n, t in self.tensors.items()}


def _section(raw: bytes, rng: list, what: str) -> bytes:
    off, length = (int(v) for v in rng)
    if off < 0 or length < 0 or off + length > len(raw):
        raise PackedModelError(f"{what}: byte range {off}+{length} outside the body")
    return raw[off : off + length]


def _decode_quant(e: dict, raw: bytes) -> QuantTensor:
    name, shape, bits = e["name"], tuple(int(v) for v in e["shape"]), int(e["bits"])
    block = (int(e["block"][0]), int(e["block"][1]))
    R = shape[0]
    C = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if not 2 <= bits <= 16 or R % block[0] or C % block[1]:
        raise PackedModelError(f"{name}: inconsistent bits/block/shape")
    nb = (R // block[0]) * (C // block[1])
    scales = np.frombuffer(_section(raw, e["scales"], name), dtype="<f2")
    if scales.size != R:
        raise PackedModelError(f"{name}: {scales.size} scales for {R} rows")
    zmap = np.unpackbits(np.frombuffer(_section(raw, e["zero_map"], name), dtype=np.uint8))
    if zmap.size < nb:
        raise PackedModelError(f"{name}: zero map too short")
    nonzero = zmap[:nb].astype(bool)
    n = int(nonzero.sum()) * block[0] * block[1]
    data = _section(raw, e["values"], name)
    if e["values_layout"] == "bitpacked":
        values = _bitunpack(data, bits, n)
    else:
        dt = np.uint8 if bits <= 8 else np.dtype("<u2")
        values = np.frombuffer(data, dtype=dt).astype(np.uint32)
        if values.size != n:
            raise PackedModelError(f"{name}: {values.size} values for {n} non-zero codes")
    if values.size and values.max() > 2 * _qmax(bits):
        raise PackedModelError(f"{name}: code out of range for {bits} bits")
    blocks = np.zeros((nb, block[0] * block[1]), dtype=np.int32)
    blocks[nonzero] = values.reshape(-1, block[0] * block[1]).astype(np.int32) - _qmax(bits)
    grid = blocks.reshape(R // block[0], C // block[1], -1)
    codes = _unblocks(grid, block, R, C).reshape(shape)
    return QuantTensor(codes, scales.astype(np.float32), bits, block)


def read_packed(path: str | Path) -> PackedModel:
    """Verify and decode a packed file; raises PackedModelError saying what is wrong."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise PackedModelError(f"{p}: cannot read ({exc.strerror})") from None
    if len(blob) < _PREFIX.size + _BODY_LEN.size + _DIGEST:
        raise PackedModelError(f"{p}: truncated ({len(blob)} bytes)")
    magic, version, _, hlen = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise PackedModelError(f"{p}: not an edgeasr packed model (bad magic)")
    if version != VERSION:
        raise PackedModelError(f"{p}: format version {version} unsupported (expected {VERSION})")
    if hashlib.sha256(blob[:-_DIGEST]).digest() != blob[-_DIGEST:]:
        raise PackedModelError(f"{p}: checksum mismatch (truncated, corrupt or modified)")
    pos = _PREFIX.size
    try:
        header = json.loads(
            zstandard.ZstdDecompressor().decompress(
                blob[pos : pos + hlen], max_output_size=_MAX_HEADER
            )
        )
        pos += hlen
        (clen,) = _BODY_LEN.unpack_from(blob, pos)
        pos += _BODY_LEN.size
        if pos + clen + _DIGEST != len(blob):
            raise PackedModelError(f"{p}: body length does not match the file size")
        raw = zstandard.ZstdDecompressor().decompress(
            blob[pos : pos + clen], max_output_size=int(header["body_bytes"])
        )
        if len(raw) != header["body_bytes"]:
            raise PackedModelError(f"{p}: body decompresses to the wrong size")
        tensors: dict[str, np.ndarray | QuantTensor] = {}
        for e in header["tensors"]:
            if e["encoding"] == "quant":
                tensors[e["name"]] = _decode_quant(e, raw)
            elif e["encoding"] in ("float32", "float16"):
                dt = "<f4" if e["encoding"] == "float32" else "<f2"
                arr = np.frombuffer(_section(raw, e["data"], e["name"]), dtype=dt)
                tensors[e["name"]] = arr.astype(np.float32).reshape(tuple(e["shape"]))
            elif e["encoding"] == "zeros":
                shape = tuple(int(v) for v in e["shape"])
                if any(v < 0 for v in shape) or int(np.prod(shape)) > header["body_bytes"] * 64:
                    raise PackedModelError(f"{p}: {e['name']}: implausible shape {shape}")
                tensors[e["name"]] = np.zeros(shape, dtype=np.float32)
            else:
                raise PackedModelError(f"{p}: unknown tensor encoding {e['encoding']!r}")
        tokenizer = _section(raw, header["tokenizer"], "tokenizer")
    except PackedModelError:
        raise
    except (KeyError, TypeError, ValueError, zstandard.ZstdError, struct.error) as exc:
        raise PackedModelError(f"{p}: malformed ({type(exc).__name__}: {exc})") from None
    return PackedModel(header["meta"], tokenizer, tensors)
