"""Read a GGUF file's header, refuse corrupt or truncated files, and summarize what is inside.

A small streaming parser of the GGUF v2/v3 header (gguf-py's GGUFReader builds numpy arrays
for every field and takes seconds on a 49k-token vocabulary; we need a few keys and the tensor
table). Tensor byte sizes use gguf-py's table of block sizes.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bench.errors import BenchError

GGUF_MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_WANTED = ("general.architecture", "general.name", "general.file_type", "general.alignment",
           "tokenizer.ggml.tokens")


@dataclass(frozen=True)
class GgufInfo:
    architecture: str | None
    name: str | None
    file_type: int | None  # llama.cpp's LLAMA_FTYPE of the file as a whole
    n_tensors: int
    n_params: int
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    vocab_size: int | None
    feed_forward_length: int | None = None
    key_length: int | None = None  # per-head K width where the file says (else n_embd / n_head)
    value_length: int | None = None
    layer_bytes: list[int] = field(default_factory=list)  # weight bytes of each blk.N
    token_embd_bytes: int = 0
    token_embd_type: str | None = None  # e.g. "Q4_K"; llama.cpp never repacks it (get_rows reads it)
    has_output_tensor: bool = False  # False: the output head is tied to token_embd
    output_bytes: int = 0  # output.weight, where the head is not tied
    tensor_types: dict[str, int] = field(default_factory=dict)  # e.g. {"Q4_1": 210, "F32": 61}
    tensor_bytes: dict[str, int] = field(default_factory=dict)  # bytes of weights per type

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise _Truncated
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > 1 << 24:
            raise ValueError(f"implausible string length {n}")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.scalar("<I"), self.scalar("<Q")
            if count > 1 << 32:
                raise ValueError(f"implausible array length {count}")
            if etype in _SCALARS:  # skip fixed-size arrays in one read
                self.take(struct.calcsize(_SCALARS[etype]) * count)
            else:
                for _ in range(count):
                    self.value(etype)
            return count  # callers only need an array's length (vocabulary size)
        raise ValueError(f"unknown GGUF value type {vtype}")


_ARCH_KEYS = (".context_length", ".block_count", ".embedding_length", ".attention.head_count",
              ".attention.head_count_kv", ".feed_forward_length", ".attention.key_length", ".attention.value_length")
TensorEntry = tuple[str, list[int], int, int]  # name, dims, type, offset


def _read_header(fh: BinaryIO, path: Path) -> tuple[dict[str, Any], list[TensorEntry], int]:
    """The keys we use, every tensor's entry, and where tensor data starts (after alignment)."""
    r = _Reader(fh)
    magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise BenchError(f"{path}: not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    version = r.scalar("<I")
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
    if n_tensors > 1 << 20 or n_kv > 1 << 20:
        raise ValueError(f"implausible counts ({n_tensors} tensors, {n_kv} keys)")
    kv: dict[str, Any] = {}
    for _ in range(n_kv):
        key, vtype = r.string(), r.scalar("<I")
        val = r.value(vtype)
        if key in _WANTED or key.endswith(_ARCH_KEYS):
            kv[key] = val
    tensors: list[TensorEntry] = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.scalar("<I")
        if n_dims > 8:
            raise ValueError(f"tensor {name}: implausible {n_dims} dimensions")
        dims = [r.scalar("<Q") for _ in range(n_dims)]
        ttype, offset = r.scalar("<I"), r.scalar("<Q")
        tensors.append((name, dims, ttype, offset))
    align = int(kv.get("general.alignment", 32))
    return kv, tensors, -(-fh.tell() // align) * align


@dataclass
class _TensorTotals:
    types: Counter[str] = field(default_factory=Counter)
    type_bytes: Counter[str] = field(default_factory=Counter)
    layers: Counter[int] = field(default_factory=Counter)
    token_embd_bytes: int = 0
    token_embd_type: str | None = None
    has_output: bool = False
    output_bytes: int = 0
    n_params: int = 0
    data_end: int = 0


def _tally(tensors: list[TensorEntry], data_start: int, path: Path) -> _TensorTotals:
    """Bytes by type and by layer, parameters, and where the last tensor's data ends."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    t = _TensorTotals(data_end=data_start)
    for name, dims, ttype, offset in tensors:
        try:
            qtype = GGMLQuantizationType(ttype)
        except ValueError:
            raise BenchError(f"{path}: corrupt GGUF: tensor {name} has unknown type {ttype}") from None
        block, type_size = GGML_QUANT_SIZES[qtype]
        n = math.prod(dims)
        nbytes = n // block * type_size
        t.n_params += n
        t.types[qtype.name] += 1
        t.type_bytes[qtype.name] += nbytes
        if name.startswith("blk."):
            t.layers[int(name.split(".")[1])] += nbytes
        elif name == "token_embd.weight":
            t.token_embd_bytes, t.token_embd_type = nbytes, qtype.name
        elif name == "output.weight":
            t.has_output = True
            t.output_bytes = nbytes
        t.data_end = max(t.data_end, data_start + offset + nbytes)
    return t


def read_gguf_info(path: Path) -> GgufInfo:
    """Parse the header; raise BenchError if the file is not a GGUF, is damaged or is cut short."""
    try:
        size = path.stat().st_size
        fh = path.open("rb")
    except OSError as exc:
        raise BenchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        try:
            kv, tensors, data_start = _read_header(fh, path)
        except _Truncated:
            raise BenchError(f"{path}: truncated GGUF: the header ends early ({size} bytes)") from None
        except (ValueError, struct.error, UnicodeError) as exc:
            raise BenchError(f"{path}: corrupt GGUF header: {exc}") from None
    t = _tally(tensors, data_start, path)
    if t.data_end > size:
        raise BenchError(f"{path}: truncated GGUF: tensor data needs {t.data_end} bytes, the file has {size}")
    arch = kv.get("general.architecture")

    def arch_key(k: str) -> Any:
        v = kv.get(f"{arch}.{k}")
        return v if isinstance(v, int) else None

    return GgufInfo(
        architecture=arch,
        name=kv.get("general.name"),
        file_type=kv.get("general.file_type"),
        n_tensors=len(tensors),
        n_params=t.n_params,
        context_length=arch_key("context_length"),
        block_count=arch_key("block_count"),
        embedding_length=arch_key("embedding_length"),
        head_count=arch_key("attention.head_count"),
        head_count_kv=arch_key("attention.head_count_kv"),
        vocab_size=kv.get("tokenizer.ggml.tokens"),
        feed_forward_length=arch_key("feed_forward_length"),
        key_length=arch_key("attention.key_length"),
        value_length=arch_key("attention.value_length"),
        layer_bytes=[t.layers[i] for i in sorted(t.layers)],
        token_embd_bytes=t.token_embd_bytes,
        token_embd_type=t.token_embd_type,
        has_output_tensor=t.has_output,
        output_bytes=t.output_bytes,
        tensor_types=dict(sorted(t.types.items())),
        tensor_bytes=dict(sorted(t.type_bytes.items())),
    )


def read_gguf_strings(path: Path, keys: tuple[str, ...]) -> dict[str, str]:
    """String values of ``keys`` in a GGUF's metadata (a chat template, say), read from the header
    alone; a key the file lacks is left out."""
    found: dict[str, str] = {}
    try:
        with path.open("rb") as fh:
            r = _Reader(fh)
            if fh.read(4) != GGUF_MAGIC or r.scalar("<I") not in (2, 3):
                raise BenchError(f"{path}: not a GGUF file of version 2 or 3")
            _, n_kv = r.scalar("<Q"), r.scalar("<Q")
            for _ in range(min(n_kv, 1 << 20)):
                key, vtype = r.string(), r.scalar("<I")
                val = r.value(vtype)
                if key in keys and isinstance(val, str):
                    found[key] = val
    except OSError as exc:
        raise BenchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (_Truncated, ValueError, struct.error) as exc:
        raise BenchError(f"{path}: corrupt GGUF header: {exc or 'it ends early'}") from None
    return found
