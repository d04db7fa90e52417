"""What runs on a fleet node, inside one of its Ray workers.

``probe``: the node's own detection of its hardware and its environment (what ``bench fleet
status`` shows, and what a lost node's failed row records).

``run_cell_on_node``: one cell. The node fetches the cell's model from the catalog source into its
own cache (sha256 checked against the catalog's and the driver's), re-plans the cell for its own
hardware, runs it with ``run_cell`` (each pass in a child process, exactly as on one host) and
returns the row. On a node whose detected hardware is the cell's tier nothing is emulated and the
row's ``tier.basis`` is ``measured``; on a node that contradicts the tier it offers, the tier's caps
are applied there as on any host and the basis says so. The node's host facts, library versions
and llama.cpp build are the row's environment, with ``environment.fleet`` naming the node.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.fleet.claim import contradictions
from bench.hardware.profiles import HostInfo, detect_host
from bench.measuring.plan import Caps, CellPlan, tier_emulation
from bench.models.catalog import Model, Variant
from bench.models.store import ModelStore, ResolvedModel
from bench.results.kinds import Basis, emulated_on
from bench.results.sections import Tier

NOT_MEASURED = Basis.NOT_MEASURED.value  # the basis of a row the fleet failed before anything was measured
INBOX = "fleet-inbox"  # under the node's cache: files copied by hand to a node without network
_ENVIRONMENT: dict[str, Any] | None = None  # per worker process: capture_environment is not free


@dataclass(frozen=True)
class NodeTask:
    """One cell for a node: the driver's plan and what the node needs to make it its own."""

    plan: CellPlan
    run_id: str
    address: str
    attempt: int
    tiers: tuple[str, ...]  # the tiers the node offers (recorded in the row)
    model_entry: tuple[Model, Variant] | None  # the catalog's entry; None: a file given by path
    reference_entry: tuple[Model, Variant] | None
    catalog_dir: str  # relative `path:` sources resolve against it, as on the driver


def _node_identity() -> tuple[str, str]:
    import ray

    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()


def node_environment(host: HostInfo) -> dict[str, Any]:
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        from bench.measuring.environment import capture_environment

        _ENVIRONMENT = capture_environment(host)
    return {**_ENVIRONMENT, "host": host.to_dict()}


def machine_id() -> str | None:
    """This machine's identity (systemd's machine-id), whatever its hostname: every Raspberry Pi is
    called raspberrypi, and two nodes on one machine must never measure at once."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def probe() -> dict[str, Any]:
    host = detect_host()
    node_id, ip = _node_identity()
    return {"node_id": node_id, "node_ip": ip, "host": host.to_dict(), "environment": node_environment(host),
            "machine_id": machine_id()}


def inbox_path(planned: ResolvedModel) -> Path:
    from bench.datafiles import cache_dir

    return cache_dir() / INBOX / planned.path.name


def fetch_on_node(entry: tuple[Model, Variant] | None, planned: ResolvedModel, catalog_dir: str,
                  hostname: str) -> ResolvedModel:
    """The cell's model in this node's cache: fetched from the catalog source (or the same path),
    else the copy in the node's inbox, else a one-line error naming the file to copy and where."""
    store = ModelStore()
    store.base_dir = Path(catalog_dir)
    label = f"{planned.model_id}:{planned.variant_id}"
    try:
        if entry is None:
            got = store.resolve_path(planned.path)
        else:
            got = store.resolve(*entry)
        return dataclasses.replace(got, model_id=planned.model_id, variant_id=planned.variant_id,
                                   facts=planned.facts)
    except BenchError as exc:
        inbox = inbox_path(planned)
        if not inbox.exists():
            size = f"{planned.size_bytes / 2**20:.1f} MiB"
            raise BenchError(f"node {hostname} could not fetch {label} into its cache ({exc}); copy "
                             f"{planned.path.name} ({size}, sha256 {planned.sha256 or 'not recorded'}) from a machine "
                             f"that has it to {hostname}:{inbox}") from None
    got = store.resolve_path(inbox) if inbox.is_file() else dataclasses.replace(planned, path=inbox)
    return dataclasses.replace(got, model_id=planned.model_id, variant_id=planned.variant_id,
                               quantization=planned.quantization, facts=planned.facts,
                               source=f"{planned.source} (copied to {inbox})",
                               check=f"a copy; its sha256 is compared with the driver's file ({planned.check})")


def _check_sha(got: ResolvedModel, planned: ResolvedModel, hostname: str) -> None:
    if planned.sha256 and got.sha256 != planned.sha256:
        raise BenchError(f"{planned.model_id}:{planned.variant_id} on node {hostname} ({got.path}) has sha256 "
                         f"{got.sha256}, the driver's file {planned.sha256}: not measured")


# The tier facts tier_on_its_hardware sets; emulation on a node replaces them all.
ON_TIER_KEYS = ("threads_requested", "threads_used", "thread_cap", "ram_budget_bytes", "enforcement", "ram_cap_note",
                "basis")


def basis_on_node(profile_id: str, hostname: str, why: list[str]) -> str:
    if not why:
        return "measured"
    return f"{emulated_on(hostname)} (a fleet node offering {profile_id}, which it is not: {'; '.join(why)})"


def plan_on_node(task: NodeTask, host: HostInfo, why: list[str]) -> CellPlan:
    """The driver's plan made this node's: its model files, and its caps (none on the tier itself;
    the tier's, emulated, on a node that contradicts it). The cell's identity (its config) is kept."""
    plan = task.plan
    model = fetch_on_node(task.model_entry, plan.model, task.catalog_dir, host.hostname)
    _check_sha(model, plan.model, host.hostname)
    reference = None
    if plan.reference is not None:
        reference = fetch_on_node(task.reference_entry, plan.reference, task.catalog_dir, host.hostname)
        _check_sha(reference, plan.reference, host.hostname)
    if not why:
        return dataclasses.replace(plan, model=model, reference=reference, caps=Caps())
    c = plan.config
    threads, caps, facts = tier_emulation(plan.profile, c.threads, host)
    if threads < c.threads:
        raise BenchError(f"node {host.hostname} has {host.usable_cpus} usable CPUs and the cell asks for {c.threads} "
                         f"threads of tier {c.profile_id}: not run (the node is not that tier: {'; '.join(why)})")
    tier = {k: v for k, v in plan.tier.to_dict().items() if k not in ON_TIER_KEYS}
    tier.update(facts, basis=basis_on_node(c.profile_id, host.hostname, why))
    return dataclasses.replace(plan, model=model, reference=reference, caps=caps, tier=Tier.from_dict(tier))


def run_cell_on_node(task: NodeTask) -> dict[str, Any]:
    """One cell on this node: {"row": the row's dict, "node_id", "node_ip", "sha256", "reference_sha256"}."""
    from bench.hardware.calibration import calibrate
    from bench.measuring.runner import RunContext, new_row, run_cell

    host = detect_host()
    node_id, ip = _node_identity()
    why = contradictions(task.plan.profile, host)
    fleet = {"address": task.address, "node_id": node_id, "node_ip": ip, "hostname": host.hostname,
             "tiers": list(task.tiers), "contradictions": why, "attempt": task.attempt}
    ctx = RunContext(run_id=task.run_id, environment={**node_environment(host), "fleet": fleet})
    out: dict[str, Any] = {"node_id": node_id, "node_ip": ip, "sha256": None, "reference_sha256": None}
    try:
        plan = plan_on_node(task, host, why)
    except BenchError as exc:
        row = new_row(task.plan, ctx, None)
        row.reason = str(exc)
        row.tier = row.tier.replace(basis=f"{NOT_MEASURED} on fleet node {host.hostname}")
        return {**out, "row": row.to_dict()}
    calibration = None if plan.precheck else calibrate(plan.config.threads)
    row = run_cell(plan, ctx, calibration)
    return {**out, "row": row.to_dict(), "sha256": plan.model.sha256,
            "reference_sha256": plan.reference.sha256 if plan.reference else None}
