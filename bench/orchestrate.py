"""The one path from a request to rows: plan the cells, skip those already done, run each in its
child process (here, or elsewhere through another executor), write each row as it completes, and
report progress through callbacks. ``bench run``, ``bench run --matrix``, ``bench verdict --run``
and library callers all come through ``run_request``; the CLI only parses and prints.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.measuring.plan import CellPlan
from bench.measuring.runner import RunContext
from bench.request import RunRequest
from bench.results.schema import Row


class RunEvents:
    """What a run tells its caller as it goes. The base class ignores everything; the CLI shows a
    progress bar by overriding these."""

    def planned(self, cells: list[CellPlan], skipped: int, output: Path) -> None:
        pass

    def cell_started(self, index: int, total: int, plan: CellPlan) -> None:
        pass

    def cell_progress(self, done: int, total: int) -> None:
        pass

    def cell_finished(self, index: int, total: int, row: Row) -> None:
        pass


class Executor(Protocol):
    """Runs planned cells and yields their rows as each completes (in any order)."""

    def run(self, plans: list[CellPlan], ctx: RunContext, events: RunEvents,
            should_stop: Callable[[], bool]) -> Iterator[Row]: ...


class LocalExecutor:
    """Each cell in a child process on this machine, one at a time (measurements never share it).
    The host is calibrated once per thread count (cached per day) before its first cell."""

    def __init__(self) -> None:
        self.calibrations: dict[int, dict[str, Any]] = {}
        self.gpu_calibration: dict[str, Any] | None = None

    def _gpu(self) -> dict[str, Any]:
        """The GPU's figures for cells on cuda tiers, measured once; a failure leaves them out (the
        rows then say they have no GPU calibration) rather than stopping the run."""
        if self.gpu_calibration is None:
            from bench.hardware.calibration import calibrate_gpu

            try:
                self.gpu_calibration = calibrate_gpu()
            except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
                self.gpu_calibration = {"gpu_calibration_error": str(exc)}
        return self.gpu_calibration

    def calibration(self, threads: int) -> dict[str, Any]:
        """This host's calibration at ``threads`` threads, measured on first use (and cached per day
        by ``calibrate``): what a run and a plan's time estimate both read."""
        if threads not in self.calibrations:
            from bench.hardware.calibration import calibrate

            self.calibrations[threads] = calibrate(threads)
        return self.calibrations[threads]

    def run(self, plans: list[CellPlan], ctx: RunContext, events: RunEvents,
            should_stop: Callable[[], bool]) -> Iterator[Row]:
        from bench.measuring.runner import run_cell

        for i, plan in enumerate(plans, 1):
            if should_stop():
                return
            events.cell_started(i, len(plans), plan)
            threads = plan.config.threads
            calibration = self.calibration(threads) if not plan.precheck else self.calibrations.get(threads)
            if calibration is not None and plan.config.device == "cuda":
                calibration = {**calibration, **self._gpu()}
            row = run_cell(plan, ctx, calibration, on_progress=events.cell_progress)
            events.cell_finished(i, len(plans), row)
            yield row


@dataclass
class RunOutcome:
    output: Path
    planned: list[CellPlan]
    skipped: int
    rows: list[Row] = field(default_factory=list)
    interrupted: bool = False

    @property
    def all_ok(self) -> bool:
        """Every cell ran and every pass it asked for succeeded (a cell retried after its fleet
        node was lost counts by its last row; the failed one stays in the file)."""
        last = {r.cell_key: r for r in self.rows}
        return not self.interrupted and all(
            r.status == "ok" and r.quality.status in (None, "ok") and r.task.status in (None, "ok")
            for r in last.values())


def done_cells(output: Path) -> set[str]:
    """Cell keys already ``ok`` in a results file (what a resumed run skips)."""
    from bench.results.files import read_rows

    if not output.exists():
        return set()
    return {r.cell_key for r in read_rows(output)[0] if r.status == "ok"}


def pending(plans: list[CellPlan], output: Path) -> list[CellPlan]:
    """The cells of ``plans`` not already ``ok`` in ``output`` (what a resumed run still runs)."""
    done = done_cells(output)
    return [p for p in plans if p.config.key() not in done]


def plan_request(req: RunRequest, catalog_path: Path, profiles_dir: Path, store: Any = None,
                 on_tier: Collection[str] = ()) -> list[CellPlan]:
    """Every cell of the request (models fetched and verified, fit predicted), nothing run yet.
    ``store`` (a ModelStore) lets the caller watch a large fetch's progress. Cells of the profiles
    in ``on_tier`` are planned for a machine that is the tier (a fleet node), the others for
    emulation on this host."""
    from bench.hardware.profiles import detect_host
    from bench.measuring.plan import build_plans
    from bench.models.catalog import load_catalog
    from bench.models.store import ModelStore

    if not req.models:
        req = req.with_default_model(load_catalog(catalog_path).default_model)
    return build_plans(req, store or ModelStore(), detect_host(), catalog_path, profiles_dir, on_tier)


def run_plans(plans: list[CellPlan], output: Path, *, skip_done: bool = False, events: RunEvents | None = None,
              should_stop: Callable[[], bool] = lambda: False, executor: Executor | None = None) -> RunOutcome:
    """Run planned cells and append each row to ``output`` as it completes (one whole line,
    fsynced: an interrupted run keeps every completed row). With ``skip_done``, cells already
    ``ok`` in ``output`` are not run again."""
    from bench.hardware.profiles import detect_host
    from bench.measuring.environment import capture_environment
    from bench.results.files import append_row

    events = events or RunEvents()
    todo = pending(plans, output) if skip_done else list(plans)
    outcome = RunOutcome(output=output, planned=todo, skipped=len(plans) - len(todo))
    events.planned(todo, outcome.skipped, output)
    ctx = RunContext(run_id=uuid.uuid4().hex[:12], environment=capture_environment(detect_host()))
    for row in (executor or LocalExecutor()).run(todo, ctx, events, should_stop):
        append_row(output, row)
        outcome.rows.append(row)
    written = {r.cell_key for r in outcome.rows}
    outcome.interrupted = any(p.config.key() not in written for p in todo)
    return outcome


def run_request(req: RunRequest, catalog_path: Path, profiles_dir: Path, output: Path, **kwargs: Any) -> RunOutcome:
    """Plan ``req`` and run it (see ``run_plans`` for the options)."""
    return run_plans(plan_request(req, catalog_path, profiles_dir), output, **kwargs)
