"""Set the suite up on this machine: ``python -m bench.install [--extras test,hf,...] [--rebuild]``.

1. Probe the CPU's instruction-set extensions (each in a child process; see ``bench.native.cpu``).
2. Install llama-cpp-python built for this CPU: the fastest build on the ladder that the probes
   allow (``bench.native.llama_build``), from the suite's cache when this kind of CPU built it
   before, else compiled now.
3. ``pip install -e .[EXTRAS]`` (llama-cpp-python is already satisfied, so pip builds nothing).
4. Smoke-test llama.cpp in a child: load the embedded model, prefill, decode. If the child dies
   from a signal, the build uses an instruction this machine cannot run: say so in one line,
   remember it, and rebuild with the next rung of the ladder (AMX off first).
5. Record the build, its flags, why it was chosen and the smoke result where the suite reads
   them (``bench doctor``, every result row, the llama-bench/llama-server builds).

Standard library only until step 3: it runs before the suite's dependencies exist.
Exit status: 0 ready; 1 no build of llama.cpp runs here, or pip failed; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.native import llama_build as lb
from bench.native.cpu import probe_extensions, read_cpu
from bench.native.smoke import run_smoke


def _say(msg: str) -> None:
    print(f"bench.install: {msg}", flush=True)


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"bench.install: `pip {' '.join(args)}` failed (exit {proc.returncode})")


def _installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version(lb.PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def _crashed_builds(state_path: Path) -> dict[str, Any]:
    try:
        return json.loads(state_path.read_text()).get("crashed", {})
    except (OSError, ValueError):
        return {}


def install(extras: str | None, rebuild: bool, smoke: bool) -> int:
    version = lb.pinned_version()
    cpu = read_cpu()
    folder = lb.builds_dir(version, cpu)
    probes = probe_extensions(cpu, cache=folder / "probes.json")
    faulty = [p for p in probes if not p.usable]
    _say(f"CPU {cpu.model_name or cpu.machine} (key {cpu.key}); extensions probed: "
         + (", ".join(f"{p.extension} FAULTS ({p.detail})" for p in faulty) if faulty
            else f"all {len(probes)} advertised ones run"))
    ladder = lb.build_ladder(cpu, probes)
    state_path = folder / "state.json"
    crashed = {} if rebuild else _crashed_builds(state_path)
    attempts: list[dict[str, Any]] = [{"build": c.name, "outcome": f"skipped: crashed before ({crashed[c.key]})"}
                                      for c in ladder if c.key in crashed]
    for a in attempts:
        _say(f"not trying the {a['build']} build again: it {a['outcome'].removeprefix('skipped: ')} "
             "(--rebuild tries it anew)")
    suite_installed = False
    while (config := lb.next_build(ladder, crashed)) is not None:
        wheel = None if rebuild else lb.cached_wheel(version, cpu, config)
        if wheel is None:
            wheel = lb.build_wheel(version, cpu, config, say=_say)
        else:
            _say(f"using the {config.name} build cached for this CPU: {wheel}")
        if _installed_version() is not None:
            _pip("uninstall", "-q", "-y", lb.PACKAGE)
        _pip("install", "-q", str(wheel))
        if not suite_installed:
            _pip("install", "-q", "-e", f".[{extras}]" if extras else ".")
            suite_installed = True
        result = run_smoke() if smoke else None
        attempts.append({"build": config.name, "outcome": "ok" if result is None or result.ok else result.detail})
        if result is not None and result.crashed:
            crashed[config.key] = result.detail
            lb.write_json(state_path, {"crashed": crashed})
            nxt = lb.next_build(ladder, crashed)
            _say(f"llama.cpp's {config.name} build crashed in the smoke test ({result.detail}): "
                 + (f"rebuilding {nxt.why}" if nxt else "no other build is left to try"))
            continue
        if result is not None and not result.ok:
            _say(f"the smoke test failed without a crash: {result.detail}")
            return 1
        failed = [f"{c.name} ({crashed[c.key]})" for c in ladder if c.key in crashed]
        reason = config.why + (f"; faster builds crashed in the smoke test: {', '.join(failed)}" if failed else "")
        record = {"package": lb.PACKAGE, "version": version, "build": config.to_dict(), "reason": reason,
                  "cpu": cpu.to_dict(), "probes": [p.__dict__ for p in probes], "attempts": attempts,
                  "wheel": str(wheel), "wheel_sha256": lb.sha256_file(wheel),
                  "smoke": result.to_dict() if result else None, "installed_by": "python -m bench.install"}
        path = lb.write_record(record)
        speed = f"; decode {result.decode_tps:.0f} tok/s in the smoke test" if result and result.decode_tps else ""
        _say(f"ready: llama.cpp {config.name} build ({' '.join(config.cmake_args)}){speed}; recorded in {path}")
        return 0
    _say("no build of llama.cpp runs on this machine: " + "; ".join(f"{a['build']}: {a['outcome']}" for a in attempts))
    return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.install", description=__doc__.split("\n\n")[0])
    p.add_argument("--extras", default="test", help="the suite's pip extras, comma-separated (default: test)")
    p.add_argument("--rebuild", action="store_true",
                   help="ignore cached wheels and earlier crashes: build and smoke-test again")
    p.add_argument("--no-smoke", action="store_true", help="skip the smoke test (the build is then unproven)")
    args = p.parse_args(argv)
    try:
        return install(args.extras, args.rebuild, not args.no_smoke)
    except RuntimeError as exc:
        print(f"bench.install: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
