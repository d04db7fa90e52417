"""benchmarks/gpu_check.py without a GPU: its arguments and one-line errors, the exact build command
for a compute capability, the step plan and its time budgets, what it prepares to carry, and the
tables it writes from recorded outputs. The recorded outputs (tests/data/gpu_check/) come from a
CPU rehearsal of the script on this development VM (``run --cpu-rehearsal``), never from a GPU:
see tests/data/gpu_check/README.md. Also the CUDA paths fixed by reading: NVML VRAM fields, the
roofline of a GPU cell, and --normalize between GPU cells."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

DATA = REPO / "tests" / "data" / "gpu_check"
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


gc = _load()


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("gpu_check: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- arguments --------------------------------------------------------------------------------------
@pytest.mark.fast
@pytest.mark.parametrize("args,needles", [
    (["run"], ["--out"]),
    (["run", "--out", "o", "--cc", "9"], ["--cc", "MAJOR.MINOR"]),
    (["run", "--out", "o", "--cc", "sm_90"], ["MAJOR.MINOR"]),
    (["run", "--out", "o", "--step-budget", "compile=60"], ["STEP=SECONDS", "build"]),
    (["run", "--out", "o", "--step-budget", "build=0"], ["STEP=SECONDS"]),
    (["run", "--out", "o", "--only", "fidelity,bogus"], ["--only", "fidelity"]),
    (["run", "--out", "o", "--model", "llama=x.gguf"], ["NAME=PATH", "smollm2"]),
    (["run", "--out", "o", "--model", "smollm2=/no/such/file.gguf"], ["/no/such/file.gguf is not a file"]),
    (["run", "--out", "o", "--budget-s", "-5"], ["positive whole number"]),
    (["plan", "--models", "gpt2"], ["--models", "qwen"]),
    (["frobnicate"], ["invalid choice"]),
    (["report", "--from", "/no/such/folder"], ["/no/such/folder/results.json: no such file"]),
])
def test_bad_input_is_one_line_and_exit_2(args, needles):
    one_line_error(run_script(*args), *needles)


@pytest.mark.fast
def test_nothing_prepared_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    one_line_error(run_script("run", "--out", str(out), "--carry", str(tmp_path / "empty")),
                   "no manifest.json", "prepare")
    assert not out.exists()


@pytest.mark.fast
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has nvidia-smi")
def test_no_gpu_is_refused_in_one_line(tmp_path):
    carry = tmp_path / "carry"
    carry.mkdir()
    (carry / "manifest.json").write_text("{}")
    out = tmp_path / "out"
    one_line_error(run_script("run", "--out", str(out), "--carry", str(carry)), "no NVIDIA GPU here",
                   "--cpu-rehearsal")
    assert not out.exists()


# -- the build command line -------------------------------------------------------------------------
@pytest.mark.fast
@pytest.mark.parametrize("cc,arch", [("9.0", "90"), ("8.6", "86"), ("12.0", "120"), ("10.0", "100"), (" 7.5 ", "75")])
def test_compute_capability_as_cmake_wants_it(cc, arch):
    assert gc.cuda_arch(cc) == arch


@pytest.mark.fast
@pytest.mark.parametrize("cc", ["9", "90", "sm_90", "9.0a", "", "9.10"])
def test_compute_capability_refused(cc):
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        gc.cuda_arch(cc)


@pytest.mark.fast
def test_the_build_command_for_an_h200():
    env, argv = gc.build_command("/w/venv/bin/python", Path("/w/src/llama_cpp_python-0.3.36"), Path("/w/build"),
                                 Path("/w/wheel"), "9.0", 16, "/usr/local/cuda/bin/nvcc")
    assert env == {
        "CMAKE_ARGS": "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=ON "
                      "-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF "
                      "-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF",
        "CMAKE_GENERATOR": "Ninja", "CMAKE_BUILD_PARALLEL_LEVEL": "16", "CUDACXX": "/usr/local/cuda/bin/nvcc"}
    assert argv == ["/w/venv/bin/python", "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                    "--no-cache-dir", "--disable-pip-version-check", "-w", "/w/wheel", "-C", "build-dir=/w/build",
                    "/w/src/llama_cpp_python-0.3.36"]


@pytest.mark.fast
def test_a_cpu_rehearsal_builds_without_cuda():
    env, argv = gc.build_command("py", Path("s"), Path("b"), Path("w"), None, 2, "/usr/local/cuda/bin/nvcc")
    assert env["CMAKE_ARGS"].startswith("-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF")
    assert "CUDA" not in env["CMAKE_ARGS"] and "CUDACXX" not in env


@pytest.mark.fast
def test_plan_prints_the_exact_build_line():
    proc = run_script("plan", "--cc", "9.0", "--work", "/w", "--jobs", "16")
    assert proc.returncode == 0, proc.stderr
    build = next(ln for ln in proc.stdout.splitlines() if ln.startswith("build: "))
    assert "CMAKE_ARGS='-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=OFF" in build
    assert "CMAKE_GENERATOR=Ninja CMAKE_BUILD_PARALLEL_LEVEL=16" in build
    assert build.endswith("/w/venv/bin/python -m pip wheel -v --no-deps --no-build-isolation --no-cache-dir "
                          "--disable-pip-version-check -w /w/wheel -C build-dir=/w/build "
                          "/w/src/llama_cpp_python-0.3.36")


@pytest.mark.fast
def test_the_pinned_version_is_the_suites():
    from bench.native.llama_build import pinned_version

    assert gc.LLAMA_VERSION == pinned_version()


# -- the plan and its budgets -----------------------------------------------------------------------
@pytest.mark.fast
def test_default_plan_order_and_budgets():
    plan = gc.plan_steps()
    assert [s.name for s in plan] == ["environment", "install", "models", "calibration", "build", "pytest",
                                      "fidelity", "offload", "serve", "backends"]
    assert gc.DEFAULT_BUDGET_S == 480  # the issue's 8 minutes, building included
    assert all(s.budget_s > 0 for s in plan)
    # what runs beside the build needs no llama.cpp; every check after it needs the build
    assert {s.name for s in plan if s.background} == {"models", "calibration"}
    assert all("build" in s.needs for s in plan if s.name in ("pytest", "fidelity", "offload", "serve"))
    # the build alone may take most of the budget, never all of it
    build = next(s for s in plan if s.name == "build")
    first = sum(s.budget_s for s in plan if s.name in ("environment", "install"))
    assert first + build.budget_s + gc.REPORT_RESERVE_S < gc.DEFAULT_BUDGET_S


@pytest.mark.fast
def test_only_brings_in_what_its_steps_need_and_skip_drops():
    assert [s.name for s in gc.plan_steps(only=["fidelity"])] == ["environment", "install", "models", "build",
                                                                  "fidelity"]
    assert [s.name for s in gc.plan_steps(only=["calibration"])] == ["environment", "install", "calibration"]
    assert "serve" not in [s.name for s in gc.plan_steps(skip=["serve"])]
    (build,) = [s for s in gc.plan_steps(budgets={"build": 100}) if s.name == "build"]
    assert build.budget_s == 100


@pytest.mark.fast
@pytest.mark.parametrize("budget,now,deadline,expected", [
    (300, 0, 480, 300),      # plenty of time: the whole budget
    (300, 200, 480, 270),    # cut to the deadline less the report's 10 s
    (90, 440, 480, 30),      # 30 s left is enough to start
    (90, 455, 480, None),    # 15 s left: not started
    (15, 460, 480, None),    # a small budget needs all of it: 10 s left
    (15, 455, 480, 15),
])
def test_allot(budget, now, deadline, expected):
    assert gc.allot(budget, now, deadline) == expected


def _run(tmp_path, deadline_in: float, **args):
    ns = gc.parser().parse_args(["run", "--out", str(tmp_path / "out"), "--carry", str(tmp_path)])
    ns.model = {}
    for k, v in args.items():
        setattr(ns, k, v)
    results = {"steps": {}, "data": {}, "plan": []}
    return gc.Run(ns, tmp_path / "out", tmp_path / "work", tmp_path, time.monotonic() + deadline_in, results)


@pytest.mark.fast
def test_a_step_whose_needs_failed_is_skipped_with_why(tmp_path):
    run = _run(tmp_path, 400)
    run.results["steps"]["build"] = {"status": "timeout"}
    run.results["steps"]["models"] = {"status": "ok"}
    gc.execute(run, next(s for s in gc.STEPS if s.name == "fidelity"))
    rec = run.results["steps"]["fidelity"]
    assert rec["status"] == "skipped" and rec["reason"] == "needs build (timeout)"
    assert json.loads((tmp_path / "out" / "results.json").read_text())["steps"]["fidelity"]["status"] == "skipped"


@pytest.mark.fast
def test_a_step_with_no_time_left_is_skipped(tmp_path):
    run = _run(tmp_path, 12)
    run.results["steps"]["environment"] = {"status": "ok"}
    gc.execute(run, next(s for s in gc.STEPS if s.name == "install"))
    rec = run.results["steps"]["install"]
    assert rec["status"] == "skipped" and rec["reason"].startswith("no time left (12 s before the deadline")


@pytest.mark.fast
def test_a_gpu_step_in_a_cpu_rehearsal_is_skipped(tmp_path):
    run = _run(tmp_path, 400, cpu_rehearsal=True)
    run.results["steps"].update(environment={"status": "ok"}, install={"status": "ok"})
    gc.execute(run, next(s for s in gc.STEPS if s.name == "calibration"))
    assert run.results["steps"]["calibration"]["reason"] == "CPU rehearsal: this step needs a GPU"


@pytest.mark.model
def test_a_command_past_its_time_is_killed_with_its_children(tmp_path):
    log, pid_file = tmp_path / "x.log", tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(gc.Timeout, match="ran past its 2 s"):
        gc.run_cmd([sys.executable, "-c", script], 2, log)
    assert time.monotonic() - t0 < 15
    assert "started" in log.read_text()
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild was killed with its group; wait for init to reap it
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        state = Path(f"/proc/{child}/stat").read_text().split()[2] if Path(f"/proc/{child}/stat").exists() else "gone"
        assert state == "Z", f"the command's child {child} is still running"


# -- what travels -----------------------------------------------------------------------------------
def _tar(path: Path, members: dict[str, bytes], link: str | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)


@pytest.mark.fast
def test_trim_sdist_keeps_what_the_build_reads(tmp_path):
    top = "llama_cpp_python-0.3.36"
    v = f"{top}/vendor/llama.cpp"
    keep = [f"{top}/CMakeLists.txt", f"{top}/llama_cpp/llama.py", f"{v}/ggml/src/ggml-cuda/mmq.cu",
            f"{v}/tools/llama-bench/llama-bench.cpp", f"{v}/tools/ui/CMakeLists.txt",
            f"{v}/scripts/ui-assets.cmake", f"{v}/ggml/src/ggml-cpu/ops.cpp"]
    drop = [f"{top}/.git/modules/vendor/llama.cpp/objects/pack/p.pack", f"{v}/models/ggml-vocab.gguf",
            f"{top}/vendor/llama.cpp/docs/build.md", f"{top}/vendor/llama.cpp/ggml/src/ggml-vulkan/x.cpp",
            f"{top}/vendor/llama.cpp/tools/ui/src/app.ts", f"{top}/vendor/llama.cpp/tools/mtmd/test-3.mp4",
            f"{top}/examples/server/server.py"]
    sdist = tmp_path / "s.tar.gz"
    _tar(sdist, {n: n.encode() for n in keep + drop} | {f"{top}/../evil": b"x"}, link=f"{top}/link")
    info = gc.trim_sdist(sdist, tmp_path / "t.tar.xz")
    with tarfile.open(tmp_path / "t.tar.xz") as tar:
        names = tar.getnames()
        assert sorted(names) == sorted(keep)
        assert tar.extractfile(keep[2]).read() == keep[2].encode()
    assert (info["kept_members"], info["dropped_members"], info["unsafe_members_dropped"]) == (7, 7, 2)
    assert info["from_sha256"] == hashlib.sha256(sdist.read_bytes()).hexdigest()


@pytest.mark.fast
def test_trim_wheel_rewrites_its_record(tmp_path):
    import base64

    src, dst = tmp_path / "bitsandbytes-0.50.2-py3-none-any.whl", tmp_path / "out" / "b.whl"
    dst.parent.mkdir()
    files = {"bitsandbytes/__init__.py": b"x = 1\n", "bitsandbytes/libbitsandbytes_cpu.so": b"cpu",
             "bitsandbytes/libbitsandbytes_cuda130.so": b"c130", "bitsandbytes/libbitsandbytes_cuda128.so": b"c128",
             "bitsandbytes/libbitsandbytes_rocm64.so": b"r64", "bitsandbytes-0.50.2.dist-info/METADATA": b"Name: b\n"}
    with zipfile.ZipFile(src, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD", "stale\n")
    info = gc.trim_wheel(src, dst, lambda n: not gc.BNB_LIB.search(n) or bool(gc.BNB_KEEP.search(n)))
    assert sorted(info["dropped"]) == ["bitsandbytes/libbitsandbytes_cuda128.so",
                                       "bitsandbytes/libbitsandbytes_rocm64.so"]
    with zipfile.ZipFile(dst) as z:
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode().splitlines()
        for line in record[:-1]:
            name, digest, size = line.split(",")
            data = z.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)
        assert record[-1] == "bitsandbytes-0.50.2.dist-info/RECORD,,"
        assert len(record) == 5


@pytest.mark.fast
def test_every_datasheet_figure_names_its_source_and_date():
    for figures in gc.DATASHEETS.values():
        for value, source in figures.values():
            assert value > 0 and "https://" in source and "read 2026-" in source


# -- tables from recorded outputs (a CPU rehearsal on this VM: see tests/data/gpu_check/README.md) ---
@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads((DATA / "cpu_rehearsal_results.json").read_text())


@pytest.mark.fast
def test_the_recording_is_labelled_a_cpu_rehearsal(recorded):
    assert recorded["cpu_rehearsal"] is True
    assert recorded["data"]["environment"]["gpu"] is None
    report = gc.report_markdown(recorded)
    assert report.startswith("# GPU check (CPU REHEARSAL: no GPU; not a GPU result)")


@pytest.mark.fast
def test_steps_table_from_the_recording(recorded):
    lines = gc.table_steps(recorded)
    assert lines[:2] == ["| step | status | seconds | budget s | note |", "|---|---|---|---|---|"]
    rows = {ln.split(" | ")[0][2:]: ln for ln in lines[2:]}
    assert set(rows) == {p["name"] for p in recorded["plan"]}
    for name, rec in recorded["steps"].items():
        assert f"| {name} | {rec['status']} | {rec['seconds']:.0f} |" in rows[name]
    assert "CPU rehearsal: this step needs a GPU" in rows["calibration"]


@pytest.mark.fast
def test_fidelity_table_from_the_recording(recorded):
    data = recorded["data"]["fidelity"]
    lines = gc.table_fidelity(data, {"smollm2"})
    (row,) = [ln for ln in lines if ln.startswith("| smollm2 (SYNTHETIC weights) |")]
    entry = data["models"]["smollm2"]
    cells = row.split(" | ")
    assert cells[1] == str(len(entry["rounds"]))
    decode = entry["suite/llama-bench"]["decode_tps"]
    assert cells[5].startswith(f"{decode['median']:.3f}") and cells[5].endswith(decode["within_2pct"])
    suite = sorted(v for r in entry["rounds"] for v in r["suite"]["prefill_tps"])
    assert cells[2].startswith(f"{gc._median(suite):.0f} / ")


@pytest.mark.fast
def test_serve_table_from_the_recording(recorded):
    data = recorded["data"]["serve"]
    lines = gc.table_serve(data)
    points = [r for r in data["rows"] if r["record"] == "point"]
    body = [ln for ln in lines if ln.startswith("| ") and ln[2].isdigit()]
    assert [int(ln.split(" | ")[0][2:]) for ln in body] == [p["load"]["value"] for p in points] == [1, 4, 16]
    for ln, p in zip(body, points, strict=True):
        assert f"| {p['summary']['ok']}/{p['summary']['requests']} | {p['summary']['output_tps']:.1f} |" in ln


@pytest.mark.fast
def test_backends_table_from_the_recording(recorded):
    data = recorded["data"]["backends"]
    lines = gc.table_backends(data)
    for case in data["cases"]:
        (ln,) = [x for x in lines if x.startswith(f"| {case['backend']} | {' '.join(case['options'])} |")]
        if case.get("row"):
            row = case["row"]
            assert f"| {row['status']} | {row['summary']['prefill_tps']['mean']:.1f} | " in ln
            assert "(not measured)" in ln or "unavailable" in ln  # a CPU row has no VRAM figure
        else:
            assert case.get("skipped", "") in ln


@pytest.mark.fast
def test_pytest_table_from_a_recorded_junit_file(recorded):
    tests = gc.parse_junit(DATA / "cpu_pytest_gpu.xml")
    assert tests and all(t["outcome"] == "skipped" and "no CUDA GPU" in t["message"] for t in tests)
    lines = gc.table_pytest({"command": "pytest -m gpu", "summary": "x", "tests": tests})
    assert len([ln for ln in lines if "| skipped |" in ln]) == len(tests)


@pytest.mark.fast
def test_offload_table_from_a_cpu_row_has_no_vram_to_compare(recorded):
    """No partial offload runs on a CPU; the table's arithmetic on a real CPU row: the prediction is
    there, the measurement is not, and no error is computed from nothing."""
    row = recorded["data"]["backends"]["cases"][0]["row"]
    data = {"model": "m.gguf", "block_count": 30, "n_ctx": 576, "target_layers": 15, "vram_cap_bytes": 2**28,
            "profile": "gpu-cap-check", "runs": [{"label": "none", "n_gpu_layers": 0, "predicted_gpu_bytes": 0,
                                                  "row": row},
                                                 {"label": "rule", "n_gpu_layers": 15, "predicted_gpu_bytes": 2**27,
                                                  "row": row},
                                                 {"label": "all", "skipped": "no time left in the step's budget"}]}
    lines = gc.table_offload(data)
    (rule,) = [ln for ln in lines if ln.startswith("| rule")]
    assert "| 128 MiB | - (" in rule and rule.split(" | ")[6] == "-"
    assert any(ln.startswith("| all | - | no time left") for ln in lines)


@pytest.mark.fast
def test_calibration_table_names_the_datasheet_and_leaves_unmeasured_empty():
    lines = gc.table_calibration({"measured": {"gpu_name": "NVIDIA H200"}, "datasheet": gc.DATASHEETS["NVIDIA H200"]})
    bw = next(ln for ln in lines if ln.startswith("| copy bandwidth"))
    assert "| - GB/s | 4800 GB/s | - |" in bw and "itkb.uw.cz" in bw
    other = gc.table_calibration({"measured": {"gpu_name": "NVIDIA H200 NVL"}, "datasheet": {}})
    assert all("no datasheet figure on file" in ln for ln in other if ln.startswith("| fp16"))


@pytest.mark.fast
def test_report_and_results_rewritten_from_a_folder(recorded, tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(recorded))
    proc = run_script("report", "--from", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    for head in ("## Machine", "## Steps", "## Build", "## llama.cpp, every layer on the GPU",
                 "## bench serve on llama-server", "## Hugging Face backends on cuda", "## What did not run, and why"):
        assert head in report
    assert "- calibration: skipped: CPU rehearsal: this step needs a GPU" in report


# -- CUDA paths fixed by reading -------------------------------------------------------------------
@pytest.mark.fast
def test_nvml_fields_never_report_an_unseen_process_as_zero():
    from bench.measuring.trackers import nvml_vram_fields

    seen = nvml_vram_fields(7, 300, 1000, 1500, None, 4, 4)
    assert seen == {"peak_vram_nvml_process_bytes": 300, "peak_vram_nvml_device_bytes": 500,
                    "vram_nvml_device_baseline_bytes": 1000}
    hidden = nvml_vram_fields(7, None, 1000, 1500, None, 4, 0)
    assert "peak_vram_nvml_process_bytes" not in hidden and hidden["peak_vram_nvml_device_bytes"] == 500
    assert "not in NVML's list" in hidden["vram_nvml_unavailable"] and "(pid 7)" in hidden["vram_nvml_unavailable"]
    broken = nvml_vram_fields(7, None, None, None, "NVMLError_LibraryNotFound: NVML Shared Library Not Found", 0, 0)
    assert broken == {"vram_nvml_unavailable": "NVMLError_LibraryNotFound: NVML Shared Library Not Found"}


@pytest.mark.fast
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has a GPU driver")
def test_vram_tracker_without_a_driver_says_why_and_reports_no_number():
    from bench.measuring.trackers import VramTracker

    with VramTracker() as t:
        pass
    report = t.report()
    assert set(report) == {"vram_nvml_unavailable"}, report
    assert report["vram_nvml_unavailable"]


@pytest.mark.fast
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has a GPU driver")
def test_serving_gpu_memory_without_a_driver_says_why():
    from bench.serving.server import gpu_memory

    out = gpu_memory(1)
    assert set(out) == {"unavailable"} and out["unavailable"]


def _recorded_cpu_row(recorded) -> dict:
    """A real llama.cpp row of the suite, recorded on this VM's CPU (tests/data/gpu_check/README.md)."""
    return json.loads((DATA / "cpu_llamacpp_row.json").read_text())


@pytest.mark.fast
def test_roofline_of_a_gpu_cell_uses_the_gpus_bandwidth_or_says_why(recorded):
    """efficiency() on a real CPU row's header and summary: a cell with every layer on the GPU is
    bounded by the GPU's bandwidth (never the host's), a partial offload by neither."""
    from bench.measuring.cost import efficiency

    row = _recorded_cpu_row(recorded)
    g, size, summary = row["model"]["gguf"], row["model"]["size_bytes"], row["summary"]
    host = row["environment"]["calibration"]
    cpu = efficiency(g, size, 576, summary, host, "rapl")
    assert cpu["roofline"]["bandwidth_bytes_per_s"] == host["memory_bandwidth_bytes_per_s"]
    no_gpu_figures = efficiency(g, size, 576, summary, host, "nvml", device="cuda", n_gpu_layers=-1)
    assert "roofline" not in no_gpu_figures and "no GPU calibration" in no_gpu_figures["roofline_unavailable"]
    partial = efficiency(g, size, 576, summary, host, "nvml", device="cuda", n_gpu_layers=10)
    assert "roofline" not in partial and partial["roofline_unavailable"].startswith("partial offload (10 of 31 layers")
    # arithmetic only: a GPU bandwidth 100x the host's gives a share 100x smaller (not a measurement)
    fast = {**host, "gpu_memory_bandwidth_bytes_per_s": 100 * host["memory_bandwidth_bytes_per_s"]}
    full = efficiency(g, size, 576, summary, fast, "nvml", device="cuda", n_gpu_layers=-1)
    assert full["roofline"]["bandwidth_source"] == "measured on this GPU (calibration)"
    assert full["roofline"]["share"] == pytest.approx(cpu["roofline"]["share"] / 100)


@pytest.mark.fast
def test_normalize_between_gpu_cells_uses_the_gpus_figures(recorded):
    from bench.analysis.compare import SPEED_METRICS, _scale
    from bench.results.schema import Row

    base = _recorded_cpu_row(recorded)

    def variant(device: str, layers: int, gpu_bw: float | None) -> Row:
        d = json.loads(json.dumps(base))
        d["config"]["device"], d["config"]["n_gpu_layers"] = device, layers
        if gpu_bw is not None:  # arithmetic test values, not measurements
            d["environment"]["calibration"]["gpu_memory_bandwidth_bytes_per_s"] = gpu_bw
        return Row.from_dict(d)

    decode = SPEED_METRICS["decode_tps"]
    factor, why = _scale(variant("cuda", -1, 2e12), variant("cuda", -1, 1e12), decode)
    assert factor == 2.0 and "gpu_memory_bandwidth_bytes_per_s" in why
    assert _scale(variant("cpu", 0, None), variant("cuda", -1, 1e12), decode) == (
        None, "decode_tps: not normalized, one cell ran on cuda and the other on cpu")
    assert _scale(variant("cuda", 12, 1e12), variant("cuda", -1, 1e12), decode)[1].endswith(
        "offloaded only part of the model to the GPU")
    assert _scale(variant("cuda", -1, None), variant("cuda", -1, 1e12), decode)[1].endswith(
        "a row has no calibration (gpu_memory_bandwidth_bytes_per_s)")
    cpu_factor, _ = _scale(variant("cpu", 0, None), variant("cpu", 0, None), decode)
    assert cpu_factor == 1.0  # CPU cells keep the host's calibration


@pytest.mark.fast
def test_a_llama_cpp_cell_under_a_vram_cap_is_not_said_to_be_capped_by_torch(recorded):
    from bench.hardware.profiles import HostInfo, Profile
    from bench.measuring.plan import _gpu_settings
    from bench.request import RunRequest

    g = _recorded_cpu_row(recorded)["model"]["gguf"]
    host = HostInfo("h", "cpu", None, 16, 16, 2**37, "Linux", [{"name": "a GPU", "vram_bytes": 80 * 2**30}])
    profile = Profile.model_validate({"id": "cap", "name": "cap", "device": "cuda",
                                      "capacity": {"threads": 4, "ram_gb": 16, "vram_gb": 0.05}})
    for backend, capped in (("llama.cpp", False), ("transformers", True)):
        tier, options = {}, {}
        _gpu_settings(RunRequest(), profile, g if backend == "llama.cpp" else {}, 576, host, tier, options,
                      backend=backend)
        assert ("vram_fraction" in options) == capped
        assert tier["vram_cap"].startswith("torch.cuda" if capped else "none: llama.cpp offloads")


# -- the run's small helpers ----------------------------------------------------------------------
@pytest.mark.fast
@pytest.mark.parametrize("name,py311,py312", [
    ("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", False, True),
    ("tokenizers-0.22.2-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True, True),
    ("gguf-0.19.0-py3-none-any.whl", True, True),
    ("bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl", True, True),
])
def test_which_carried_wheels_this_python_installs(name, py311, py312):
    assert gc.wheel_fits(name, (3, 11)) is py311 and gc.wheel_fits(name, (3, 12)) is py312


@pytest.mark.fast
def test_the_carried_corpus_is_checked_before_it_enters_the_cache(tmp_path):
    carry, cache = tmp_path / "carry", tmp_path / "cache"
    (carry / "corpora").mkdir(parents=True)
    text = "Alice was beginning to get very tired\n"
    (carry / "corpora" / "alice29.txt").write_text(text)
    sha = hashlib.sha256(text.encode()).hexdigest()
    (carry / "manifest.json").write_text(json.dumps({"corpora": {"alice29": {"sha256": sha}}}))
    assert gc.seed_corpora(carry, cache) == ["alice29"]
    assert (cache / "corpora" / "alice29.txt").read_text() == text
    (carry / "corpora" / "alice29.txt").write_text(text + "tampered\n")
    with pytest.raises(RuntimeError, match="not the text prepare carried"):
        gc.seed_corpora(carry, tmp_path / "cache2")
    assert not (tmp_path / "cache2" / "corpora" / "alice29.txt").exists()


@pytest.mark.fast
def test_the_checks_catalog_is_valid_and_names_synthetic_files(tmp_path):
    from bench.models.catalog import load_catalog

    path = tmp_path / "models.yaml"
    path.write_text(gc.check_catalog({"smollm2": str(tmp_path / "a b: c.gguf"), "qwen": "/x/q.gguf"}, {"smollm2"}))
    catalog = load_catalog(path)
    smol, qwen = catalog.model("smollm2-135m-check"), catalog.model("qwen2.5-coder-1.5b-check")
    assert "SYNTHETIC" in smol.name and "SYNTHETIC" not in qwen.name
    assert smol.variant("q4_1").source.path == str(tmp_path / "a b: c.gguf")
    assert smol.variant("hf-f32").source.derive.recipe == "HF"
    assert [v.id for v in qwen.variants] == ["q4_k_m"]
