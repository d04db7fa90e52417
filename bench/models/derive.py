"""Derived variants, made offline from a GGUF the store already has: a quantization ladder.

Recipes (a registry: name -> function(src, dst)):
  F16              every tensor of 2+ dimensions dequantized to F16 with gguf-py, 1-D tensors F32,
                   metadata copied, general.file_type set to F16. From a Q4_1 file this is the Q4_1
                   weights at F16, not the original release: a reference for divergence, nothing more.
  Q8_0 ... Q2_K    llama.cpp's own quantizer (llama_model_quantize), from an F16 parent.

llama.cpp falls back to other types for tensors whose rows are not a multiple of the block size
(SmolLM2's 576-wide rows), so a derived file's real tensor-type mix is read back from its header
and recorded; a ladder never claims a type it did not get.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.errors import BenchError

LADDER = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]


def dequantize_to_f16(src: Path, dst: Path) -> None:
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType as QT
    from gguf import GGUFValueType as VT

    reader = gguf.GGUFReader(src)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        name = field.name
        if name == gguf.Keys.General.ARCHITECTURE or name.startswith("GGUF."):
            continue  # the writer adds the architecture and the header fields itself
        if name == gguf.Keys.General.FILE_TYPE:
            continue
        if name == gguf.Keys.General.ALIGNMENT:
            writer.add_custom_alignment(int(field.contents()))
            continue
        vtype = field.types[0]
        writer.add_key_value(name, field.contents(), vtype, sub_type=field.types[-1] if vtype == VT.ARRAY else None)
    writer.add_file_type(1)  # LLAMA_FTYPE_MOSTLY_F16
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # numpy order: outermost first
        if t.tensor_type == QT.F32:
            data = np.asarray(t.data, dtype=np.float32)
        else:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
        data = data.reshape(shape).astype(np.float16 if len(shape) >= 2 else np.float32)
        writer.add_tensor(t.name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


def llama_quantize(ftype_name: str) -> Callable[[Path, Path], None]:
    """llama.cpp's quantizer, run in a child process: a build that cannot run on this machine
    dies there, not in the caller (``bench doctor`` explains; see bench.native)."""
    def run(src: Path, dst: Path) -> None:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "bench.models.derive", "quantize",
                               ftype_name, str(src), str(dst)])
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            raise BenchError(f"llama.cpp's quantizer died with {sig} while making {ftype_name} from {src.name}: "
                             "the llama.cpp build likely uses an instruction this machine cannot run; "
                             "run `bench doctor`")
        if proc.returncode != 0:
            raise BenchError(f"llama.cpp could not quantize {src.name} to {ftype_name} (exit {proc.returncode}; "
                             f"its log is beside the output)")

    return run


def _quantize_in_this_process(ftype_name: str, src: Path, dst: Path) -> int:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.nthread = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    params.allow_requantize = True  # a quantized parent is allowed; an F16 one is better
    return llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))


def gguf_to_hf_folder(src: Path, dst: Path) -> None:
    """A full-precision (float32) safetensors folder through transformers' GGUF loading, for the
    backends that load Hugging Face models. Needs the ``hf`` extra (torch, transformers, accelerate)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise BenchError("the HF recipe needs torch and transformers: pip install -e '.[hf]'") from None
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    dst.mkdir(parents=True)
    model.save_pretrained(dst, safe_serialization=True)  # safetensors, never pickle
    tokenizer.save_pretrained(dst)


RECIPES: dict[str, Callable[[Path, Path], None]] = {"F16": dequantize_to_f16, "HF": gguf_to_hf_folder,
                                                   **{q: llama_quantize(q) for q in LADDER}}


def recipe(name: str) -> Callable[[Path, Path], None]:
    try:
        return RECIPES[name.upper()]
    except KeyError:
        raise BenchError(f"unknown derive recipe {name!r}; known: {', '.join(RECIPES)}") from None


@contextlib.contextmanager
def _native_output_to(path: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (C libraries write there directly) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("wb") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def derive_file(parent: Path, parent_sha256: str, recipe_name: str, root: Path) -> tuple[Path, bool]:
    """The derived file for (parent, recipe) under ``root``, made once. Returns (path, made_now).
    A sidecar JSON records how it was made."""
    fn = recipe(recipe_name)
    name = recipe_name.upper()
    out_dir = root / "derived" / parent_sha256[:16]
    dst = out_dir / (f"{parent.stem}.{name}" if name == "HF" else f"{parent.stem}.{name}.gguf")  # HF: a folder
    if dst.exists():
        return dst, False
    out_dir.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    if part.is_dir():
        shutil.rmtree(part)
    t0 = time.perf_counter()
    log = out_dir / f"{dst.name.removesuffix('.gguf')}.log"
    try:
        with _native_output_to(log):  # llama.cpp prints a line per tensor; keep it, out of the way
            fn(parent, part)
    except BaseException:
        shutil.rmtree(part) if part.is_dir() else part.unlink(missing_ok=True)
        raise
    os.replace(part, dst)
    from importlib import metadata

    dst.with_name(dst.name.removesuffix(".gguf") + ".json").write_text(json.dumps({
        "recipe": name, "parent": str(parent), "parent_sha256": parent_sha256,
        "seconds": time.perf_counter() - t0,
        "tool": {"F16": f"gguf-py {metadata.version('gguf')}",
                 "HF": f"transformers {_version('transformers')} from_pretrained(gguf_file=...)"}.get(
            name, f"llama_model_quantize, llama-cpp-python {metadata.version('llama-cpp-python')}"),
    }, indent=1))
    return dst, True


if __name__ == "__main__":  # python -m bench.models.derive quantize FTYPE SRC DST (the child of llama_quantize)
    if len(sys.argv) != 5 or sys.argv[1] != "quantize":
        sys.exit("usage: python -m bench.models.derive quantize FTYPE SRC DST")
    sys.exit(1 if _quantize_in_this_process(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])) else 0)
