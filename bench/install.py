"""Set the suite up on this machine: ``python -m bench.install [--extras test,hf,...] [--rebuild]``.

1. Probe the CPU's instruction-set extensions (each in a child process; see ``bench.native.cpu``).
2. Install llama-cpp-python built for this CPU: the fastest build on the ladder that the probes
   allow (``bench.native.llama_build``), from the suite's cache when this kind of CPU built it
   before, else compiled now. On a CPU that advertises AMX the native build (with AMX) is an
   explicit upgrade, ``--try-native``: kept only if its smoke test runs, else the safe build
   is put back (docs/install.md, "The AMX rung").
3. ``pip install -e .[EXTRAS]`` (llama-cpp-python is already satisfied, so pip builds nothing).
4. Smoke-test llama.cpp in a child: load the embedded model, prefill, decode. If the child dies
   from a signal, the build uses an instruction this machine cannot run: say so in one line,
   remember it, and rebuild with the next rung of the ladder (AMX off first).
5. Record the build, its flags, why it was chosen and the smoke result where the suite reads
   them (``bench doctor``, every result row, the llama-bench/llama-server builds).

Standard library only until step 3: it runs before the suite's dependencies exist.
Exit status: 0 ready; 1 no build of llama.cpp runs here, pip failed, or ``--try-native`` could not
keep the native build (a build that runs is installed all the same); 2 bad arguments.
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


def _read_state(state_path: Path) -> dict[str, dict[str, Any]]:
    """What earlier setups on this kind of CPU learnt: builds that crashed, and builds that ran."""
    try:
        data = json.loads(state_path.read_text())
    except (OSError, ValueError):
        data = {}
    return {"crashed": dict(data.get("crashed") or {}), "ran": dict(data.get("ran") or {})}


def install(extras: str | None, rebuild: bool, smoke: bool, try_native: bool = False) -> int:
    version = lb.pinned_version()
    cpu = read_cpu()
    folder = lb.builds_dir(version, cpu)
    probes = probe_extensions(cpu, cache=folder / "probes.json")
    faulty = [p for p in probes if not p.usable]
    _say(f"CPU {cpu.model_name or cpu.machine} (key {cpu.key}); extensions probed: "
         + (", ".join(f"{p.extension} FAULTS ({p.detail})" for p in faulty) if faulty
            else f"all {len(probes)} advertised ones run"))
    if try_native and faulty:
        raise SystemExit(f"bench.install: --try-native: the probe of {', '.join(p.extension for p in faulty)} "
                         "faulted on this CPU, and a native build would compile it in")
    state_path = folder / "state.json"
    state = _read_state(state_path)
    if rebuild:
        state = {"crashed": {}, "ran": {}}
    crashed, ran = state["crashed"], state["ran"]
    ladder = lb.build_ladder(cpu, probes, try_native=try_native, native_ran_here=lb.NATIVE.key in ran)
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
        upgrade_failed = try_native and config.name == lb.NATIVE.name and result is not None and not result.ok
        if result is not None and (result.crashed or upgrade_failed):
            crashed[config.key] = result.detail
            lb.write_json(state_path, state)
            nxt = lb.next_build(ladder, crashed)
            _say(f"llama.cpp's {config.name} build {'crashed in' if result.crashed else 'failed'} the smoke test "
                 f"({result.detail}): " + (f"next, the {nxt.name} build ({nxt.why})" if nxt
                                           else "no other build is left to try"))
            continue
        if result is not None and not result.ok:
            _say(f"the smoke test failed without a crash: {result.detail}")
            return 1
        return _installed(version, cpu, probes, ladder, config, wheel, result, attempts, state, state_path, try_native)
    _say("no build of llama.cpp runs on this machine: " + "; ".join(f"{a['build']}: {a['outcome']}" for a in attempts))
    return 1


def _installed(version: str, cpu: Any, probes: list[Any], ladder: list[lb.BuildConfig], config: lb.BuildConfig,
               wheel: Path, result: Any, attempts: list[dict[str, Any]], state: dict[str, dict[str, Any]],
               state_path: Path, try_native: bool) -> int:
    """Record the build that runs (install record, and in ``state``), say so, and what else could be tried."""
    crashed = state["crashed"]
    failed = [f"{c.name} ({crashed[c.key]})" for c in ladder if c.key in crashed]
    reason = config.why + (f"; faster builds crashed in the smoke test: {', '.join(failed)}" if failed else "")
    record = {"package": lb.PACKAGE, "version": version, "build": config.to_dict(), "reason": reason,
              "cpu": cpu.to_dict(), "probes": [p.__dict__ for p in probes], "attempts": attempts,
              "wheel": str(wheel), "wheel_sha256": lb.sha256_file(wheel),
              "smoke": result.to_dict() if result else None, "installed_by": "python -m bench.install"}
    path = lb.write_record(record)
    if result is not None:
        state["ran"][config.key] = result.detail
        lb.write_json(state_path, state)
    speed = f"; decode {result.decode_tps:.0f} tok/s in the smoke test" if result and result.decode_tps else ""
    _say(f"ready: llama.cpp {config.name} build ({' '.join(config.cmake_args)}){speed}; recorded in {path}")
    if try_native and config.name != lb.NATIVE.name:
        _say(f"--try-native: the native build did not run here; the {config.name} build is installed and runs")
        return 1
    if config.name != lb.NATIVE.name and lb.advertises_amx(probes) and all(p.usable for p in probes):
        _say("this CPU advertises AMX: `python -m bench.install --try-native` builds the native build (with "
             "AMX), smoke-tests it and keeps it only if it runs")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.install", description=__doc__.split("\n\n")[0])
    p.add_argument("--extras", default="test", help="the suite's pip extras, comma-separated (default: test)")
    p.add_argument("--rebuild", action="store_true",
                   help="ignore cached wheels and earlier crashes: build and smoke-test again")
    p.add_argument("--no-smoke", action="store_true", help="skip the smoke test (the build is then unproven)")
    p.add_argument("--try-native", action="store_true",
                   help="on a CPU that advertises AMX: build the native build (-march=native, AMX included), "
                        "smoke-test it, and keep it only if it runs (exit 1 if it did not: the safe build stays)")
    args = p.parse_args(argv)
    if args.try_native and args.no_smoke:
        p.error("--try-native keeps the native build only if its smoke test runs: it cannot skip it")
    try:
        return install(args.extras, args.rebuild, not args.no_smoke, args.try_native)
    except RuntimeError as exc:
        print(f"bench.install: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
