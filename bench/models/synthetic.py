"""Synthetic GGUF files: a real model's header with random weights, for checks of speed and memory
on a machine the real file cannot reach (a GPU machine with no network and a 64 MiB upload).

A *skeleton* is the first bytes of a real GGUF, up to where tensor data starts: every metadata key
(architecture, hyperparameters, the whole tokenizer) and the tensor table (names, shapes, types,
offsets). A few MB, where the file is 98 MB or 1.1 GB. ``synthesize`` appends random tensor data of
each tensor's own type and size, so the result has the real file's exact size, layout, tensor types
and tokenizer: llama.cpp reads the same bytes per token and runs the same kernels, and speed and
memory match the real model's. The text it writes is meaningless: never use it for quality.

Random data, not zeros (zeros can run faster than real data, and hide kernels that skip work). Each
quantized block's fp16 scale fields are set to small positive values so that the weights stay within
about +-0.1 (the block layouts are ggml-common.h's); float norms are 1, other float tensors N(0, 0.02).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.models.store import sha256_file

# Block layout per quantized type: (bytes per block, [(byte offset of an fp16 field, base value)]).
# Base values keep |weight| below about 0.1 given each type's quant and sub-scale ranges.
F16_FIELDS: dict[str, tuple[int, list[tuple[int, float]]]] = {
    "Q4_0": (18, [(0, 0.005)]),                 # d; w = d (q - 8)
    "Q4_1": (20, [(0, 0.005), (2, -0.04)]),     # d, m; w = d q + m
    "Q5_0": (22, [(0, 0.0025)]),                # d; w = d (q - 16)
    "Q5_1": (24, [(0, 0.0025), (2, -0.04)]),    # d, m
    "Q8_0": (34, [(0, 0.0003)]),                # d; w = d q, q int8
    "Q2_K": (84, [(80, 0.002), (82, 0.0005)]),  # scales[16] qs[64] d dmin
    "Q3_K": (110, [(108, 0.0003)]),             # hmask[32] qs[64] scales[12] d
    "Q4_K": (144, [(0, 0.0001), (2, 0.0001)]),  # d dmin scales[12] qs[128]
    "Q5_K": (176, [(0, 0.00005), (2, 0.0001)]),  # d dmin scales[12] qh[32] qs[128]
    "Q6_K": (210, [(208, 0.00002)]),            # ql[128] qh[64] scales[16] d
}
MANIFEST_VERSION = 1


def _tensor_table(path: Path) -> tuple[list[tuple[str, list[int], int, int]], int, int]:
    """Every tensor (name, dims, type, offset), where tensor data starts, and the alignment."""
    from bench.models.gguf_info import _read_header, _Truncated

    try:
        with path.open("rb") as fh:
            kv, tensors, data_start = _read_header(fh, path)
    except _Truncated:
        raise BenchError(f"{path}: the GGUF header ends early") from None
    except (OSError, ValueError, UnicodeError) as exc:
        raise BenchError(f"{path}: cannot read its GGUF header: {exc}") from None
    return tensors, data_start, int(kv.get("general.alignment", 32))


def make_skeleton(src: Path, dst: Path, source: str) -> dict[str, Any]:
    """Write ``src``'s header (everything before its tensor data) to ``dst`` and return the manifest
    ``synthesize`` needs. ``src`` may be the real file or any prefix of it holding the whole header
    (the first part of a file split across wheels). ``source`` says where ``src`` came from."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    tensors, data_start, alignment = _tensor_table(src)
    table = []
    end = 0
    for name, dims, ttype, offset in sorted(tensors, key=lambda t: t[3]):
        qtype = GGMLQuantizationType(ttype)
        block, type_size = GGML_QUANT_SIZES[qtype]
        nbytes = math.prod(dims) // block * type_size
        table.append([name, qtype.name, offset, nbytes])
        end = max(end, offset + nbytes)
    with src.open("rb") as fin:
        header = fin.read(data_start)
    if len(header) != data_start:
        raise BenchError(f"{src}: shorter than its own header ({data_start} bytes)")
    dst.write_bytes(header)
    return {"manifest_version": MANIFEST_VERSION, "source": source, "header_bytes": data_start,
            "header_sha256": hashlib.sha256(header).hexdigest(), "alignment": alignment,
            "data_bytes": end, "file_bytes": data_start + end, "tensors": table}


def _block_data(type_name: str, nbytes: int, name: str, rng: Any) -> Any:
    """``nbytes`` of random data laid out as ``type_name`` (a numpy uint8 array)."""
    import numpy as np

    if type_name == "F32":
        n = nbytes // 4
        values = np.ones(n, np.float32) if "norm" in name else rng.normal(0, 0.02, n).astype(np.float32)
        return values.view(np.uint8)
    if type_name == "F16":
        return rng.normal(0, 0.02, nbytes // 2).astype(np.float16).view(np.uint8)
    if type_name not in F16_FIELDS:
        raise BenchError(f"tensor {name}: synthetic weights of type {type_name} are not implemented "
                         f"(known: F32, F16, {', '.join(F16_FIELDS)})")
    block, fields = F16_FIELDS[type_name]
    if nbytes % block:
        raise BenchError(f"tensor {name}: {nbytes} bytes is not a whole number of {type_name} blocks")
    data = np.frombuffer(rng.bytes(nbytes), dtype=np.uint8).copy().reshape(-1, block)
    for offset, base in fields:
        scale = (base * rng.uniform(0.5, 1.5, len(data))).astype(np.float16)
        data[:, offset:offset + 2] = scale.view(np.uint8).reshape(-1, 2)
    return data.reshape(-1)


def synthesize(skeleton: Path, manifest: dict[str, Any], dst: Path, seed: int = 0) -> dict[str, Any]:
    """The skeleton's header followed by random weights (see the module docstring), written to
    ``dst`` through ``dst.part``: a failure leaves nothing at ``dst``. Returns what was made."""
    import numpy as np

    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise BenchError(f"{skeleton}: manifest version {manifest.get('manifest_version')}, "
                         f"expected {MANIFEST_VERSION}")
    header = skeleton.read_bytes()
    if len(header) != manifest["header_bytes"] or hashlib.sha256(header).hexdigest() != manifest["header_sha256"]:
        raise BenchError(f"{skeleton}: not the header its manifest describes (size or sha256 differs)")
    rng = np.random.default_rng(seed)
    part = dst.with_name(dst.name + ".part")
    try:
        with part.open("wb") as out:
            out.write(header)
            pos = 0
            for name, type_name, offset, nbytes in manifest["tensors"]:
                if offset < pos:
                    raise BenchError(f"{skeleton}: tensor {name} overlaps the one before it")
                out.write(b"\0" * (offset - pos))  # alignment padding, as gguf writers leave it
                out.write(_block_data(type_name, nbytes, name, rng).tobytes())
                pos = offset + nbytes
        if part.stat().st_size != manifest["file_bytes"]:
            raise BenchError(f"{dst}: wrote {part.stat().st_size} bytes, expected {manifest['file_bytes']}")
        os.replace(part, dst)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return {"path": str(dst), "bytes": dst.stat().st_size, "sha256": sha256_file(dst), "seed": seed,
            "source": manifest["source"], "synthetic": True}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=1))


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: cannot read the skeleton's manifest: {exc}") from None
