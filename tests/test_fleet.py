"""A fleet on a real local Ray cluster (ray==2.60.0, the `fleet` extra): a head that runs no cells
and nodes started with `bench fleet head|join` on this machine, each offering other tiers; cells
land on the node of their tier, a node killed mid-cell becomes a failed row and the cell is retried
on the tier's other node, a resumed run does only the missing cells. The cluster starts once for
the module (tests/fleet_cluster.py: every connection on loopback, every process it started killed
at the end, also when a test fails). Cells are tiny: the embedded model, prompt 8, 4 tokens, r=3.

Nodes on one machine share its CPUs, so no test here reads a speed: only where cells ran and what
their rows say.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, read_jsonl, run_bench

if os.environ.get("BENCH_REQUIRE_FLEET") != "1":  # .ci/run sets it: there a missing Ray fails
    pytest.importorskip("ray", reason="the fleet tests need the `fleet` extra: pip install -e '.[fleet]'")

from fleet_cluster import LocalFleet  # noqa: E402

pytestmark = pytest.mark.slow

TIER = """\
schema_version: 1
id: {id}
name: test tier {id} (this machine's own figures, or a quarter of its RAM)
device: cpu
capacity: {{threads: {threads}, ram_gb: {ram_gb}, reserve_ram_gb: 0}}
price: {{basis: on_demand, usd_per_hour: 0.5, source: "test fixture"}}
"""
CELL = {"models": ["smollm2-135m"], "prompt_tokens": [8], "gen_tokens": [4], "repetitions": 3}
# Ray's C++ core logs to stderr itself; in a network namespace without a route it warns once that it
# fell back to the hostname for this machine's address. Not the suite's output.
RAY_CPP_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [^\]]*\] \S+\.cc:\d+:")


def _lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not RAY_CPP_LOG.match(ln)]


def _clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Bad input: exit 2 and one line of the suite's own, no traceback."""
    lines = _lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]


def _matrix(path: Path, **keys: object) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({**CELL, **keys}))
    return path


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory) -> Path:
    """fleet-a and fleet-b: this machine's own CPUs and RAM (each node here IS the tier);
    fleet-small: a quarter of its RAM (a node offering it contradicts it); two real tiers."""
    from bench.hardware.profiles import detect_host

    host = detect_host()
    d = tmp_path_factory.mktemp("fleet-profiles")
    ram = host.ram_bytes / 2**30
    for tid, threads, ram_gb in [("fleet-a", host.usable_cpus, round(ram, 2)), ("fleet-b", host.usable_cpus,
                                                                               round(ram, 2)),
                                 ("fleet-small", 1, round(ram / 4, 2))]:
        (d / f"{tid}.yaml").write_text(TIER.format(id=tid, threads=threads, ram_gb=ram_gb))
    for real in ("laptop-4c-8g", "rpi5-8g"):
        shutil.copy(REPO / "hardware_profiles" / f"{real}.yaml", d)
    return d


@pytest.fixture(scope="module")
def fleet_head(profiles_dir, embedded_model):
    """The cluster's head (it runs no cells), once for the module; every process of the fleet is
    killed afterwards, and the teardown fails if one is left."""
    fleet = LocalFleet(profiles_dir)
    try:
        t0 = time.monotonic()
        fleet.start_head()
        fleet.timings["head"] = time.monotonic() - t0
        yield fleet
    finally:
        left = fleet.stop()
        assert not left, f"fleet processes left running: {left}"


@pytest.fixture(scope="module")
def fleet(fleet_head):
    """Node a offers fleet-a; node b offers fleet-b, fleet-small (which it is not) and laptop-4c-8g
    (which it is not either, on this machine)."""
    t0 = time.monotonic()
    fleet_head.join("a", "fleet-a")
    fleet_head.join("b", "fleet-b", "fleet-small", "laptop-4c-8g")
    fleet_head.timings["two nodes"] = time.monotonic() - t0
    return fleet_head


@pytest.fixture(scope="module")
def status(fleet) -> dict:
    proc = fleet.bench("fleet", "status", "--address", fleet.address, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _node(status: dict, tier: str) -> dict:
    (node,) = [n for n in status["nodes"] if n["alive"] and tier in n["tiers"]]
    return node


@pytest.fixture(scope="module")
def matrix_run(fleet, status, tmp_path_factory):
    """Cells for fleet-a, fleet-b, fleet-small and rpi5-8g (no node offers it: skipped)."""
    root = tmp_path_factory.mktemp("fleet-run")
    m = _matrix(root / "m.yaml", profiles=["fleet-a", "fleet-b", "fleet-small", "rpi5-8g"])
    out = root / "results.jsonl"
    t0 = time.monotonic()
    proc = fleet.bench("run", "--matrix", str(m), "--fleet", fleet.address, "--no-progress", "-o", str(out))
    fleet.timings["3 cells"] = time.monotonic() - t0
    return proc, read_jsonl(out), m, out


# -- no cluster needed ------------------------------------------------------------------------------
def test_claim_check_tolerances():
    from bench.fleet.claim import contradictions, node_resources, tiers_of
    from bench.hardware.profiles import HostInfo, get_profile

    def host(usable, logical, ram_gib, gpus=()):
        return HostInfo("h", "cpu", None, logical, usable, int(ram_gib * 2**30), "Linux", list(gpus))

    d = REPO / "hardware_profiles"
    laptop = get_profile("laptop-4c-8g", d, host(8, 8, 8), local=False)  # 8 threads, 8 GB
    assert contradictions(laptop, host(8, 8, 7.3)) == []  # what a real 8 GB laptop reports
    assert contradictions(laptop, host(8, 8, 6.5)) == []
    small = contradictions(laptop, host(2, 2, 23.6))
    assert len(small) == 2 and "2 usable CPUs" in small[0] and "23.6 GiB" in small[1]
    assert "more than twice" in contradictions(laptop, host(32, 32, 8))[0]  # a desktop is not the laptop
    t4 = get_profile("cloud-t4", d, host(4, 4, 16), local=False)
    assert contradictions(t4, host(4, 4, 15.3, [{"name": "Tesla T4", "vram_bytes": 15 * 2**30}])) == []
    assert "no CUDA GPU" in contradictions(t4, host(4, 4, 15.3))[0]
    assert "40.0 GiB" in contradictions(t4, host(4, 4, 15.3, [{"name": "A100", "vram_bytes": 40 * 2**30}]))[0]
    res = node_resources(["rpi5-8g"], "pi")
    assert res == {"tier:rpi5-8g": 1, "host:pi": 1, "bench-slot": 1} and tiers_of(res) == ["rpi5-8g"]
    assert "bench-slot" not in node_resources([], "driver", cells=False)


def test_cells_for_a_fleet_are_planned_for_the_tier_not_this_host(embedded_model):
    """A cell sent to a node that is the tier runs with the tier's threads and no caps, whatever
    the driver's host has: its identity (the key a resumed run skips by) is the same from any driver."""
    from bench.datafiles import find_data_path
    from bench.orchestrate import plan_request
    from bench.request import RunRequest

    req = RunRequest(profiles=["laptop-4c-8g"], prompt_tokens=[8], gen_tokens=[4])
    args = (find_data_path("models.yaml", None, "BENCH_CATALOG"), REPO / "hardware_profiles")
    (on_tier,) = plan_request(req, *args, on_tier={"laptop-4c-8g"})
    (emulated,) = plan_request(req, *args)
    from bench.hardware.profiles import load_profiles

    laptop_threads = load_profiles(REPO / "hardware_profiles")["laptop-4c-8g"].capacity.threads
    assert on_tier.config.threads == laptop_threads and on_tier.caps.to_dict() == {} and on_tier.tier.measured_on_tier
    assert emulated.tier.basis.startswith("emulated on ") and emulated.caps.cpus
    assert on_tier.config.threads >= emulated.config.threads


def test_a_node_without_network_names_the_file_to_copy(tmp_path, embedded_model):
    """The node fetches into its own cache; where it cannot, the one-line error names the file,
    its checksum and where to copy it, and a copy there is used."""
    planned = {"model_id": embedded_model.model_id, "variant_id": embedded_model.variant_id,
               "format": "gguf", "quantization": embedded_model.quantization, "path": str(embedded_model.path),
               "sha256": embedded_model.sha256, "size_bytes": embedded_model.size_bytes,
               "source": embedded_model.source}
    code = ("import json, sys\nfrom pathlib import Path\nfrom bench.errors import BenchError\n"
            "from bench.fleet.remote import fetch_on_node\nfrom bench.models.catalog import load_catalog\n"
            "from bench.models.store import ResolvedModel\n"
            "d = json.loads(sys.argv[1]); d['path'] = Path(d['path'])\n"
            "cat = load_catalog(Path('models.yaml')); m = cat.model(cat.default_model)\n"
            "try:\n    got = fetch_on_node((m, m.variant(None)), ResolvedModel(**d), '.', 'pi5')\n"
            "    print(json.dumps({'path': str(got.path), 'sha256': got.sha256, 'source': got.source}))\n"
            "except BenchError as exc:\n    print(json.dumps({'error': str(exc)}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(BENCH_CACHE=str(tmp_path / "cache"), PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")  # no index: offline

    def on_node() -> dict:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(planned)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    inbox = tmp_path / "cache" / "fleet-inbox" / embedded_model.path.name
    err = on_node()["error"]
    assert "\n" not in err and "node pi5 could not fetch smollm2-135m:q4_1" in err
    assert f"copy {embedded_model.path.name}" in err and embedded_model.sha256 in err and f"pi5:{inbox}" in err
    inbox.parent.mkdir(parents=True)
    shutil.copy(embedded_model.path, inbox)
    got = on_node()
    assert got["path"] == str(inbox) and got["sha256"] == embedded_model.sha256 and "copied to" in got["source"]


@pytest.mark.parametrize("args,needle", [
    (["run", "--fleet", "127.0.0.1:9"], "no Ray head at 127.0.0.1:9"),
    (["run", "--fleet", "head-without-port"], "is not HOST:PORT"),
    (["run", "--fleet-missing", "emulate"], "--fleet-missing needs --fleet"),
    (["fleet", "join", "--address", "127.0.0.1:9", "-p", "no-such-tier"], "unknown hardware profile 'no-such-tier'"),
    (["fleet", "join", "--address", "127.0.0.1:9", "-p", "auto"], "auto is this host as it is, not a tier"),
    (["fleet", "join", "--address", "127.0.0.1:9", "-p", "rpi5-8g"], "no Ray head at 127.0.0.1:9"),
    (["fleet", "status", "--address", "127.0.0.1:9"], "no Ray head at 127.0.0.1:9"),
])
def test_bad_fleet_input_is_one_line(tmp_path, args, needle):
    out = tmp_path / "r.jsonl"
    proc = run_bench(*args, *(["-o", str(out)] if args[0] == "run" else []), timeout=120)
    _clean_error(proc, needle)
    assert not out.exists()


# -- on the local cluster ---------------------------------------------------------------------------
def test_a_fleet_without_a_node_that_runs_cells_is_refused(fleet_head, tmp_path):
    if len(fleet_head.sessions) > 1:
        pytest.skip("nodes have joined already (this test runs before the others in file order)")
    out = tmp_path / "r.jsonl"
    proc = fleet_head.bench("run", "--fleet", fleet_head.address, "-p", "fleet-a", "-o", str(out))
    _clean_error(proc, "has no node that runs cells", "bench fleet join")
    assert not out.exists()


def test_status_lists_nodes_and_flags_a_contradicting_claim(fleet, status):
    nodes = [n for n in status["nodes"] if n["alive"]]
    assert len(nodes) == 3
    (head,) = [n for n in nodes if not n["runs_cells"]]
    a, b = _node(status, "fleet-a"), _node(status, "fleet-b")
    assert head["tiers"] == [] and a["tiers"] == ["fleet-a"]
    assert a["checks"] == {"fleet-a": []} and a["detected"]["logical_cores"] >= 1  # detected on the node
    assert b["checks"]["fleet-b"] == [] and "of RAM" in b["checks"]["fleet-small"][0]
    if b["detected"]["usable_cpus"] < 8:
        assert any("usable CPUs" in w for w in b["checks"]["laptop-4c-8g"])
    assert len({n["node_id"] for n in nodes}) == 3
    table = fleet.bench("fleet", "status", "--address", fleet.address)
    assert table.returncode == 0 and "CONTRADICTS fleet-small" in table.stdout
    assert "3 live node(s), 1 contradicting a tier it offers" in table.stderr


def test_cells_land_on_the_node_of_their_tier(matrix_run, status, embedded_model):
    proc, rows, _, _ = matrix_run
    # the rpi5-8g cell asked for was not measured: the run says so, and its status too
    assert proc.returncode == 1, proc.stderr
    assert "tier rpi5-8g: no fleet node offers it: 1 cell(s) skipped" in proc.stderr
    assert "1 cell(s) asked for were not measured" in proc.stderr
    by_tier = {r["config"]["profile_id"]: r for r in rows}
    assert sorted(by_tier) == ["fleet-a", "fleet-b", "fleet-small"] and len(rows) == 3
    assert all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows]
    a, b = _node(status, "fleet-a"), _node(status, "fleet-b")
    for tier, node in (("fleet-a", a), ("fleet-b", b), ("fleet-small", b)):
        r = by_tier[tier]
        f = r["environment"]["fleet"]
        assert f["node_id"] == node["node_id"] and f["address"] == status["address"] and f["attempt"] == 1
        assert r["environment"]["host"] == node["detected"]  # the node's host facts, detected there
        assert r["model"]["sha256"] == embedded_model.sha256
    for tier in ("fleet-a", "fleet-b"):  # each node is its tier: measured, nothing emulated
        t = by_tier[tier]["tier"]
        assert t["basis"] == "measured" and t["enforcement"] == "measured-only"
        assert by_tier[tier]["environment"]["fleet"]["contradictions"] == []
        # nothing pinned on the tier itself: the machine watch covers every core the cell could use
        state = by_tier[tier]["environment"]["machine_state"]
        assert len(state["cpus"]) == a["detected"]["usable_cpus"]
        assert "others_share" in state and "steal_share" in state and "cpu_time" not in state
        assert state["cpus_watched"].startswith("every core")
    small = by_tier["fleet-small"]  # node b offers fleet-small but is not it: the tier's caps, applied there
    assert small["tier"]["basis"].startswith("emulated on ") and "which it is not" in small["tier"]["basis"]
    assert small["tier"]["enforcement"] == "rss-watchdog" and len(small["tier"]["affinity_in_child"]) == 1
    assert small["environment"]["fleet"]["contradictions"]


def _driver(fleet: LocalFleet, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(fleet.bench_cmd("run", "--fleet", fleet.address, "--no-progress", *args), cwd=REPO,
                            env=fleet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _when_a_cell_runs(fleet: LocalFleet, driver: subprocess.Popen[str], nodes: set[str], act) -> tuple[object, int]:
    """Call ``act(child, node)`` once a cell's measuring child runs on one of ``nodes``, then wait for
    the driver, watching how many cells ever ran at once on this machine (the most is returned)."""
    done, most = None, 0
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            children = fleet.measuring_children()
            most = max(most, len(children))
            for child in children:
                node = fleet.node_of(child)
                if done is None and node in nodes:
                    done = act(child, node)
            time.sleep(0.02)
        driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    return done, most


def test_an_interrupted_run_keeps_its_rows_and_the_next_does_only_the_missing_cells(fleet, matrix_run, tmp_path):
    """Ctrl-C while a cell runs on a node: that cell finishes and is written, nothing else starts
    (exit 130); the next run does the other cells, and with --fleet-missing emulate the tier no node
    offers is emulated here."""
    _, _, m, _ = matrix_run
    out = tmp_path / "results.jsonl"
    driver = _driver(fleet, "--matrix", str(m), "-o", str(out))
    interrupted, _ = _when_a_cell_runs(fleet, driver, {"a", "b"},
                                       lambda child, node: driver.send_signal(signal.SIGINT) or node)
    assert interrupted and driver.returncode == 130
    kept = read_jsonl(out)
    assert 1 <= len(kept) < 3 and all(r["status"] == "ok" for r in kept)
    proc = fleet.bench("run", "--matrix", str(m), "--fleet", fleet.address, "--fleet-missing", "emulate",
                       "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"{len(kept)} cell(s) already ok" in proc.stderr
    assert "tier rpi5-8g: no fleet node offers it: 1 cell(s) emulated" in proc.stderr
    rows = read_jsonl(out)
    new = rows[len(kept):]
    assert {r["cell_key"] for r in kept}.isdisjoint(r["cell_key"] for r in new)
    assert sorted(r["config"]["profile_id"] for r in rows) == ["fleet-a", "fleet-b", "fleet-small", "rpi5-8g"]
    (pi,) = [r for r in new if r["config"]["profile_id"] == "rpi5-8g"]
    assert pi["tier"]["basis"].startswith("emulated on ") and "fleet" not in pi["environment"]


def test_verdict_and_report_prefer_the_tier_and_name_its_machine(matrix_run, status, tmp_path):
    from bench.analysis.flat import flatten, latest_per_cell
    from bench.analysis.report import Report, write_report
    from bench.analysis.verdict import judge
    from bench.claims import load_claims
    from bench.results.schema import Row

    _, rows, _, _ = matrix_run
    measured = next(r for r in rows if r["config"]["profile_id"] == "fleet-a")
    emulated = json.loads(json.dumps(measured))  # the same cell, emulated elsewhere, later and faster
    emulated["tier"]["basis"] = "emulated on elsewhere"
    emulated["environment"].pop("fleet")
    emulated["environment"]["host"]["hostname"] = "elsewhere"
    emulated["created_at"] = "2999-01-01T00:00:00+00:00"
    emulated["summary"]["decode_tps"]["mean"] *= 100
    both = [Row.from_dict(measured), Row.from_dict(emulated)]
    (kept,) = latest_per_cell(both)
    assert kept.tier.basis == "measured" and kept.environment.fleet is not None
    verdict = judge(both, load_claims(REPO / "claims.yaml"))
    (tv,) = [t for t in verdict.tiers if t.tier == "fleet-a"]
    node = _node(status, "fleet-a")
    assert tv.basis == f"measured on the tier: {node['hostname']} (fleet node {node['node_id'][:12]})"
    assert flatten(both[0])["basis"] == "measured" and flatten(both[1])["basis"] == "emulated"
    assert flatten(both[0])["fleet_node"] == node["node_id"]
    (md,) = write_report(Report(rows=both, sources=["x"]), tmp_path, ["md"], "report")
    assert "| basis |" in md.read_text() and "| measured |" in md.read_text()


def test_a_node_lost_mid_cell_becomes_a_failed_row_the_cell_is_retried_and_the_rest_goes_on(fleet, tmp_path):
    """A third node offers fleet-b too. The node running the first fleet-b cell is killed (its
    raylet, agents, worker and the cell's measuring child) while the cell runs."""
    fleet.join("c", "fleet-b")
    m = _matrix(tmp_path / "m.yaml", profiles=["fleet-b", "fleet-a"], prompt_tokens=[8, 16])
    out = tmp_path / "r.jsonl"
    driver = _driver(fleet, "--matrix", str(m), "-o", str(out))

    def kill(child, node):
        fleet.kill_node(node, also=[child])
        return node

    killed, most = _when_a_cell_runs(fleet, driver, {"b", "c"}, kill)
    assert killed is not None, "no fleet-b cell was seen running"
    assert most == 1  # three nodes of two tiers, one machine: one cell at a time
    assert not fleet.processes({fleet.sessions[killed]})
    rows = read_jsonl(out)
    assert driver.returncode == 0  # every cell's last row is ok
    (lost,) = [r for r in rows if r["status"] != "ok"]
    assert lost["status"] == "failed" and "was lost mid-cell" in lost["reason"]
    assert "retried once on another node of tier fleet-b" in lost["reason"]
    assert lost["tier"]["basis"].startswith("not measured")
    retried = [r for r in rows if r["cell_key"] == lost["cell_key"] and r["status"] == "ok"]
    assert len(retried) == 1 and retried[0]["environment"]["fleet"]["attempt"] == 2
    dead_id = lost["environment"]["fleet"]["node_id"]
    assert retried[0]["environment"]["fleet"]["node_id"] != dead_id
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted((r["config"]["profile_id"], r["config"]["prompt_tokens"]) for r in ok) == [
        ("fleet-a", 8), ("fleet-a", 16), ("fleet-b", 8), ("fleet-b", 16)]
    assert all(r["environment"]["fleet"]["node_id"] != dead_id for r in ok)
    print(f"\nfleet timings (s): {fleet.timings}")


# -- the fleet token ---------------------------------------------------------------------------------
TOKEN_LINE = re.compile(r"^fleet token \(shown this once; kept in (\S+), mode 0600\): ([0-9a-f]{64})$", re.M)


def test_a_token_file_others_can_read_is_refused(tmp_path):
    token = tmp_path / "fleet-token"
    token.write_text("a" * 64)
    token.chmod(0o644)
    proc = run_bench("fleet", "head", "--port", "0", env={"BENCH_FLEET_TOKEN_FILE": str(token)}, timeout=120)
    _clean_error(proc, f"fleet token {token}: readable by others (mode 0644)", f"chmod 600 {token}")
    unwritable = "/proc/no-such-process/fleet-token"  # the head cannot make its token: it does not start
    proc = run_bench("fleet", "head", "--port", "0", env={"BENCH_FLEET_TOKEN_FILE": unwritable}, timeout=120)
    _clean_error(proc, f"fleet token {unwritable}: cannot write it")


def test_the_head_requires_a_token_prints_it_once_and_names_its_ports(fleet_head):
    """The head made the fleet's token (0600), printed it once with the join command, and listed the
    TCP ports its processes listen on: the GCS at the address it printed, the raylet's."""
    import stat

    out = fleet_head.head_output
    (match,) = TOKEN_LINE.finditer(out)
    path, value = Path(match.group(1)), match.group(2)
    assert path == fleet_head.token_file and path.read_text() == value
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out.count(value) == 2  # the token line and the join command, nothing else
    assert f"BENCH_FLEET_TOKEN={value} bench fleet join --address {fleet_head.address}" in out
    assert "requiring the fleet token" in out
    gcs_port = int(fleet_head.address.rpartition(":")[2])
    listening = [ln for ln in out.splitlines() if ln.startswith("listening (TCP): ")]
    assert any(ln.startswith(f"listening (TCP): {gcs_port} GCS on ") for ln in listening), listening
    assert any(" raylet on " in ln for ln in listening), listening
    if fleet_head.holder is not None:  # in the private namespace every listener is on loopback
        assert all(ln.endswith(" on 127.0.0.1") for ln in listening), listening
    assert "every port requires the fleet token" in out


def test_a_join_without_the_token_is_refused(fleet, tmp_path):
    """A machine with no token (none in its token file, none given) is refused in one line, before Ray."""
    rc, out = fleet.launch("no-token", "fleet", "join", "--address", fleet.address, "-p", "fleet-a",
                           env={"BENCH_FLEET_TOKEN_FILE": str(tmp_path / "none")})
    lines = _lines(out)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in out, out
    assert lines[0].startswith("bench: error: no fleet token: set BENCH_FLEET_TOKEN") and "refuses a node" in lines[0]
    assert not fleet.processes({fleet.sessions["no-token"]})


def test_a_join_with_a_wrong_token_is_refused_by_the_head(fleet, tmp_path):
    """The head itself (Ray's GCS) refuses a wrong token: one line, nothing left running, no token kept."""
    kept = tmp_path / "token"
    rc, out = fleet.launch("wrong-token", "fleet", "join", "--address", fleet.address, "-p", "fleet-a",
                           env={"BENCH_FLEET_TOKEN_FILE": str(kept), "BENCH_FLEET_TOKEN": "f" * 64})
    lines = _lines(out)
    assert rc == 2 and len(lines) == 1 and "Traceback" not in out, out
    assert "the head refused this machine's fleet token" in lines[0]
    assert not kept.exists() and not fleet.processes({fleet.sessions["wrong-token"]})


def test_ray_itself_refuses_a_stranger_without_the_token(fleet, tmp_path):
    """Not the suite's check: plain `ray start` and a plain driver, with no token and Ray's own
    defaults (no RAY_AUTH_MODE, an empty home), are refused by the running head."""
    from bench.fleet.cluster import ray_cli

    env = {k: v for k, v in fleet.env.items() if not k.startswith(("RAY_AUTH", "BENCH_FLEET_TOKEN"))}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
    ports = [f"--{name}=0" for name in ("node-manager-port", "object-manager-port", "runtime-env-agent-port",
                                        "dashboard-agent-grpc-port", "dashboard-agent-listen-port",
                                        "metrics-export-port", "min-worker-port", "max-worker-port")]
    node = subprocess.run([*fleet.prefix, ray_cli(), "start", f"--address={fleet.address}", *ports,
                           f"--node-ip-address={fleet.ip}", f"--temp-dir={fleet.root / 'stranger'}",
                           "--disable-usage-stats"],
                          env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert node.returncode != 0 and "InvalidAuthToken" in node.stdout + node.stderr
    driver = subprocess.run([*fleet.prefix, sys.executable, "-c",
                             f"import ray; ray.init(address={fleet.address!r}); print('connected')"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert driver.returncode != 0 and "connected" not in driver.stdout
    assert "AuthenticationError" in driver.stderr or "InvalidAuthToken" in driver.stderr, driver.stderr[-2000:]


def test_a_join_with_the_printed_token_works_and_keeps_it_for_this_machine(fleet, tmp_path):
    """Another machine's way in: the value the head printed, in BENCH_FLEET_TOKEN; the node joins and
    the token is kept in that machine's token file (0600) for its later commands."""
    import stat

    value = fleet.token_file.read_text()
    kept = tmp_path / "token"
    out = fleet.join("d", env={"BENCH_FLEET_TOKEN_FILE": str(kept), "BENCH_FLEET_TOKEN": value})
    assert "joined the fleet" in out and f"the fleet token is kept in {kept}" in out
    assert kept.read_text() == value and stat.S_IMODE(kept.stat().st_mode) == 0o600
    proc = fleet.bench("fleet", "status", "--address", fleet.address, "--json")
    assert proc.returncode == 0, proc.stderr
    hosts = [n for n in json.loads(proc.stdout)["nodes"] if n["alive"] and not n["runs_cells"]]
    assert len(hosts) == 2  # the head and node d, neither offering a tier
