"""``FleetExecutor``: the ``bench.orchestrate.Executor`` that runs cells on a Ray cluster's nodes.

A cell whose profile a node offers runs on such a node (``bench.fleet.remote``), chosen by the
driver: one cell per node and per machine at a time (measurements never share a machine), a node
that is the tier preferred over one that only offers it. Rows come back to the driver, which
writes them as for a local run (``bench.orchestrate.run_plans``: atomic lines, resumable by cell
key). ``auto`` cells, and cells of tiers no node offers when the user asks to emulate them, run
here afterwards, one at a time, as without a fleet.

Faults: a node lost mid-cell makes the cell a ``failed`` row saying so, and the cell is retried
once on another node of its tier if there is one; cells left for a tier whose nodes are all lost
become ``failed`` rows (not run). Tasks never retry on their own (``max_retries=0``: Ray would
resubmit to a tier that may have no node left and wait forever).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.errors import BenchError
from bench.fleet import require_ray
from bench.fleet.claim import SLOT, NodeView, contradictions
from bench.fleet.cluster import connect
from bench.fleet.remote import NOT_MEASURED, NodeTask, probe, run_cell_on_node
from bench.hardware.profiles import HostInfo, Profile, detect_host, get_profile
from bench.measuring.plan import CellPlan
from bench.measuring.runner import RunContext, new_row
from bench.results.schema import Row

Missing = Literal["skip", "emulate"]
PROBE_TIMEOUT_S = 180.0


def _why(exc: BaseException) -> str:
    """One short line for a Ray error: the node's own exception where there is one, else the
    error's type and first sentence."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def list_nodes() -> list[NodeView]:
    ray = require_ray()
    return [NodeView(node_id=n["NodeID"], ip=n["NodeManagerAddress"], alive=bool(n["Alive"]),
                     resources=dict(n.get("Resources") or {})) for n in ray.nodes()]


def probe_nodes(nodes: list[NodeView], timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Each live node detects its own hardware and environment (no slot taken: it runs beside a cell)."""
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(probe)
    refs = {}
    for n in nodes:
        if n.alive:
            refs[task.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                n.node_id, soft=False)).remote()] = n
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        n = refs[ref]
        try:
            got = ray.get(ref)
        except Exception as exc:  # the node's bench could not run: say why, do not use the node
            n.error = f"probe failed: {_why(exc)}"
            continue
        n.host, n.environment, n.machine_id = HostInfo(**got["host"]), got["environment"], got.get("machine_id")
    for ref in pending:
        refs[ref].error = f"probe did not answer within {timeout_s:g} s"
        ray.cancel(ref, force=True)


@dataclass
class Placement:
    """Where the cells of a run go, and what the user is told about it."""

    plans: list[CellPlan]  # the cells to run (fleet, auto and emulated ones)
    lines: list[str] = field(default_factory=list)
    skipped: int = 0


@dataclass
class _Attempt:
    index: int  # the cell's number in the run (for progress)
    plan: CellPlan
    number: int = 1  # 2: the retry after a lost node
    avoid: frozenset[str] = frozenset()  # nodes not to use (the lost one)


class FleetExecutor:
    """Connects to the cluster at ``address`` (``auto``: the one on this machine), lists its nodes
    and has each detect its hardware. Raises BenchError (one line) if the cluster cannot be
    reached or has no node that runs cells."""

    def __init__(self, address: str, catalog_path: Path, profiles_dir: Path) -> None:
        self.requested = address
        self.address = connect(address)
        self.catalog_path, self.profiles_dir = catalog_path, profiles_dir
        self.nodes = list_nodes()
        probe_nodes(self.nodes)
        self.lost: set[str] = set()
        self.host = detect_host()
        self._profiles: dict[str, Profile | None] = {}
        self._catalog: Any = None

    # -- what the cluster offers ----------------------------------------------------------------
    @property
    def tiers(self) -> set[str]:
        """Tiers some usable node offers (``auto`` is never a fleet tier: it is this host)."""
        return {t for n in self.nodes if n.usable for t in n.tiers if t != "auto"}

    def require_nodes(self) -> None:
        if not any(n.usable for n in self.nodes):
            broken = [f"{n.label()}: {n.error}" for n in self.nodes if n.alive and n.runs_cells and n.error]
            raise BenchError(f"the fleet at {self.requested} has no node that runs cells"
                             + (f" ({broken[0]})" if broken else ": join one with `bench fleet join --address "
                                f"{self.address} --profile ID`"))

    def profile(self, profile_id: str) -> Profile | None:
        """This driver's definition of a tier a node offers (None: no such profile here)."""
        if profile_id not in self._profiles:
            try:
                self._profiles[profile_id] = get_profile(profile_id, self.profiles_dir, self.host, local=False)
            except BenchError:
                self._profiles[profile_id] = None
        return self._profiles[profile_id]

    def contradictions(self, node: NodeView, profile_id: str) -> list[str] | None:
        """What the node's detected hardware contradicts in the tier; None: not known here."""
        profile = self.profile(profile_id)
        if profile is None or node.host is None:
            return None
        return contradictions(profile, node.host)

    def status(self) -> list[dict[str, Any]]:
        """Every node: Ray's view, its own detection, what it offers and whether it is what it claims."""
        out = []
        for n in self.nodes:
            checks: dict[str, list[str] | str] = {}
            for t in n.tiers:
                why = self.contradictions(n, t)
                checks[t] = why if why is not None else ("unknown profile here" if self.profile(t) is None
                                                         else "not detected")
            out.append({"node_id": n.node_id, "ip": n.ip, "alive": n.alive, "runs_cells": n.runs_cells,
                        "hostname": n.hostname, "tiers": n.tiers, "checks": checks, "error": n.error,
                        "detected": n.host.to_dict() if n.host else None,
                        "bench": {k: (n.environment or {}).get(k) for k in ("bench_version", "bench_commit")}})
        return out

    # -- placement ------------------------------------------------------------------------------
    def place(self, plans: list[CellPlan], missing: Missing) -> Placement:
        """Which cells run on the fleet, which here, which not at all (a tier no node offers,
        unless ``missing`` is ``emulate``), with a line per tier saying so."""
        self.require_nodes()
        offered, here = self.tiers, self.host.hostname
        by_tier: dict[str, list[CellPlan]] = {}
        for p in plans:
            by_tier.setdefault(p.config.profile_id, []).append(p)
        keep: list[CellPlan] = []
        placement = Placement(plans=keep)
        for tier, cells in by_tier.items():
            if tier in offered:
                nodes = [n for n in self.nodes if n.usable and tier in n.tiers]
                placement.lines.append(f"tier {tier}: {len(cells)} cell(s), for its {len(nodes)} fleet node(s): "
                                       + ", ".join(n.label() for n in nodes))
                for n in nodes:
                    why = self.contradictions(n, tier)
                    if why:
                        placement.lines.append(f"  node {n.label()} offers {tier} but is not that tier "
                                               f"({'; '.join(why)}): its cells of {tier} are emulated there")
                keep += cells
            elif tier == "auto":
                placement.lines.append(f"auto: {len(cells)} cell(s) on this host ({here}) as it is")
                keep += cells
            elif missing == "emulate":
                placement.lines.append(f"tier {tier}: no fleet node offers it: {len(cells)} cell(s) emulated on "
                                       f"this host ({here})")
                keep += cells
            else:
                placement.lines.append(f"tier {tier}: no fleet node offers it: {len(cells)} cell(s) skipped "
                                       "(--fleet-missing emulate runs them emulated on this host)")
                placement.skipped += len(cells)
        mine = self.host_environment_key()
        for n in self.nodes:
            theirs = {k: (n.environment or {}).get(k) for k in ("bench_version", "bench_commit")}
            if n.usable and n.environment and theirs != mine:
                placement.lines.append(f"  warning: node {n.label()} runs bench {theirs['bench_version']} "
                                       f"({theirs['bench_commit']}), this driver {mine['bench_version']} "
                                       f"({mine['bench_commit']})")
        for n in self.nodes:
            if n.alive and n.runs_cells and n.error:
                placement.lines.append(f"  warning: node {n.label()} is not used: {n.error}")
        return placement

    @staticmethod
    def host_environment_key() -> dict[str, Any]:
        from bench import __version__
        from bench.measuring.environment import suite_commit

        return {"bench_version": __version__, "bench_commit": suite_commit()}

    # -- running --------------------------------------------------------------------------------
    def run(self, plans: list[CellPlan], ctx: RunContext, events: Any,
            should_stop: Callable[[], bool]) -> Iterator[Row]:
        offered = self.tiers
        on_fleet = [(i, p) for i, p in enumerate(plans, 1) if p.config.profile_id in offered]
        here = [(i, p) for i, p in enumerate(plans, 1) if p.config.profile_id not in offered]
        yield from self._run_on_fleet(on_fleet, len(plans), ctx, events, should_stop)
        yield from _run_here(here, len(plans), ctx, events, should_stop)

    def _candidates(self, attempt: _Attempt) -> list[NodeView]:
        """Live nodes of the attempt's tier it may use, nodes that are the tier first."""
        tier = attempt.plan.config.profile_id
        nodes = [n for n in self.nodes if n.usable and tier in n.tiers and n.node_id not in self.lost
                 and n.node_id not in attempt.avoid]
        return sorted(nodes, key=lambda n: bool(self.contradictions(n, tier)))

    def _run_on_fleet(self, items: list[tuple[int, CellPlan]], total: int, ctx: RunContext, events: Any,
                      should_stop: Callable[[], bool]) -> Iterator[Row]:
        if not items:
            return
        ray = require_ray()
        queue = deque(_Attempt(i, p) for i, p in items)
        running: dict[Any, tuple[_Attempt, NodeView]] = {}
        try:
            while queue or running:
                if not should_stop():
                    yield from self._start(queue, running, total, ctx, events)
                elif not running:
                    return
                if not running:
                    continue  # every queued cell either started or became a row
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    attempt, node = running.pop(ref)
                    row, retry = self._collect(ref, attempt, node, ctx)
                    if row is not None:
                        events.cell_finished(attempt.index, total, row)
                        yield row
                    if retry is not None:
                        queue.appendleft(retry)
        except BaseException:  # Ctrl-C twice, or the caller stopped: leave nothing running on the nodes
            for ref in running:
                ray.cancel(ref, force=True)
            raise

    def _start(self, queue: deque[_Attempt], running: dict[Any, tuple[_Attempt, NodeView]], total: int,
               ctx: RunContext, events: Any) -> Iterator[Row]:
        busy_nodes = {n.node_id for _, n in running.values()}
        busy_machines = {n.machine for _, n in running.values()}
        for attempt in list(queue):
            nodes = self._candidates(attempt)
            if not nodes:
                queue.remove(attempt)
                row = self._not_run(attempt, ctx)
                events.cell_started(attempt.index, total, attempt.plan)
                events.cell_finished(attempt.index, total, row)
                yield row
                continue
            free = [n for n in nodes if n.node_id not in busy_nodes and n.machine not in busy_machines]
            if not free:
                continue
            node = free[0]
            queue.remove(attempt)
            running[self._submit(attempt, node, ctx)] = (attempt, node)
            busy_nodes.add(node.node_id)
            busy_machines.add(node.machine)
            events.cell_started(attempt.index, total, attempt.plan)

    def _entry(self, model_id: str, variant_id: str) -> Any:
        """The catalog's entry of a model the node fetches itself (None: a file given by path)."""
        from bench.models.catalog import load_catalog

        try:
            if self._catalog is None:
                self._catalog = load_catalog(self.catalog_path)
            model = self._catalog.model(model_id)
            return model, model.variant(variant_id)
        except BenchError:
            return None

    def _submit(self, attempt: _Attempt, node: NodeView, ctx: RunContext) -> Any:
        ray = require_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        plan = attempt.plan
        task = NodeTask(plan=plan, run_id=ctx.run_id, address=self.address, attempt=attempt.number,
                        tiers=tuple(node.tiers), model_entry=self._entry(plan.model.model_id, plan.model.variant_id),
                        reference_entry=self._entry(plan.reference.model_id, plan.reference.variant_id)
                        if plan.reference else None, catalog_dir=str(self.catalog_path.parent.resolve()))
        return ray.remote(run_cell_on_node).options(
            num_cpus=0, max_retries=0, resources={SLOT: 1},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)).remote(task)

    def _collect(self, ref: Any, attempt: _Attempt, node: NodeView,
                 ctx: RunContext) -> tuple[Row | None, _Attempt | None]:
        """The row a finished task gives, and the retry to queue, if any."""
        ray = require_ray()
        from ray import exceptions as rx

        tier = attempt.plan.config.profile_id
        try:
            result = ray.get(ref)
        except rx.TaskUnschedulableError:  # the node went before the cell started: place it again
            self.lost.add(node.node_id)
            return None, attempt
        except rx.RayTaskError as exc:  # the suite's own code failed on the node
            return self._failed(attempt, node, ctx, f"error on fleet node {node.label()}: {_why(exc)}"), None
        except rx.NodeDiedError as exc:
            self.lost.add(node.node_id)
            others = [n for n in self._candidates(attempt) if n.node_id != node.node_id]
            retry = None
            if attempt.number == 1 and others:
                retry = _Attempt(attempt.index, attempt.plan, 2, attempt.avoid | {node.node_id})
                then = f"retried once on another node of tier {tier}"
            elif attempt.number > 1:
                then = "it was the retry: not retried again"
            else:
                then = f"no other node offers tier {tier}"
            reason = f"fleet node {node.label()} was lost mid-cell ({_why(exc)}); {then}"
            return self._failed(attempt, node, ctx, reason), retry
        except Exception as exc:  # the worker died, an object was lost...: the cell failed there
            return self._failed(attempt, node, ctx, f"on fleet node {node.label()}: {type(exc).__name__}: "
                                                    f"{_why(exc)}"), None
        try:
            row = Row.from_dict(result["row"])
        except (BenchError, KeyError, TypeError, ValueError) as exc:  # a node running another schema version
            return self._failed(attempt, node, ctx, f"the row from fleet node {node.label()} is unreadable here: "
                                                    f"{exc}"), None
        for what, planned, got in (("model", attempt.plan.model, result.get("sha256")),
                                   ("reference", attempt.plan.reference, result.get("reference_sha256"))):
            if planned is not None and planned.sha256 and got and got != planned.sha256:
                row.status, row.reason = "failed", (f"the {what} file node {node.label()} measured has sha256 {got}, "
                                                    f"not {planned.sha256}: its numbers are not this cell's")
        return row, None

    def _node_context(self, node: NodeView, attempt: _Attempt, ctx: RunContext) -> RunContext:
        env = dict(node.environment or ctx.environment)
        if node.host is not None:
            env["host"] = node.host.to_dict()
        env["fleet"] = {"address": self.address, "node_id": node.node_id, "node_ip": node.ip,
                        "hostname": node.hostname, "tiers": node.tiers,
                        "contradictions": self.contradictions(node, attempt.plan.config.profile_id) or [],
                        "attempt": attempt.number}
        return RunContext(run_id=ctx.run_id, environment=env)

    def _failed(self, attempt: _Attempt, node: NodeView, ctx: RunContext, reason: str) -> Row:
        """A cell that failed because of the fleet (its node lost, the suite failing there): nothing
        was measured, and its basis says so (it never outranks a measurement of the cell)."""
        row = new_row(attempt.plan, self._node_context(node, attempt, ctx), None)
        row.reason = reason
        row.tier = row.tier.replace(basis=f"{NOT_MEASURED} on fleet node {node.hostname}")
        return row

    def _not_run(self, attempt: _Attempt, ctx: RunContext) -> Row:
        tier = attempt.plan.config.profile_id
        lost = [n.label() for n in self.nodes if n.node_id in self.lost and tier in n.tiers]
        row = new_row(attempt.plan, ctx, None)
        row.reason = (f"not run: no live fleet node offers tier {tier}"
                      + (f" (lost during this run: {', '.join(lost)})" if lost else ""))
        row.tier = row.tier.replace(basis=f"{NOT_MEASURED}: no fleet node of the tier")
        return row

    def close(self) -> None:
        ray = require_ray()
        ray.shutdown()


class _Numbered:
    """Events of a sub-run, renumbered as cells of the whole run."""

    def __init__(self, events: Any, numbers: list[int], total: int) -> None:
        self.events, self.numbers, self.total = events, numbers, total

    def cell_started(self, index: int, total: int, plan: CellPlan) -> None:
        self.events.cell_started(self.numbers[index - 1], self.total, plan)

    def cell_progress(self, done: int, total: int) -> None:
        self.events.cell_progress(done, total)

    def cell_finished(self, index: int, total: int, row: Row) -> None:
        self.events.cell_finished(self.numbers[index - 1], self.total, row)


def _run_here(items: list[tuple[int, CellPlan]], total: int, ctx: RunContext, events: Any,
              should_stop: Callable[[], bool]) -> Iterator[Row]:
    """``auto`` cells and emulated tiers: on this host, one at a time, after the fleet's."""
    from bench.orchestrate import LocalExecutor

    if items:
        yield from LocalExecutor().run([p for _, p in items], ctx, _Numbered(events, [i for i, _ in items], total),
                                       should_stop)

