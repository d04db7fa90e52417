"""Several machines as one fleet, on Ray (the optional extra ``fleet``: ``pip install -e '.[fleet]'``).

Each machine joins the cluster as a node offering the tier it really is (``bench fleet join
--profile ID``: a Ray custom resource ``tier:ID``, plus ``host:HOSTNAME`` and one ``bench-slot``);
``bench run --fleet ADDRESS`` sends each cell to a node of its tier, one cell per machine at a
time, where it runs in a child process exactly as on one host, and writes the rows it gets back.

- ``claim``: resource names, and whether a machine's detected hardware is the tier it claims;
- ``cluster``: ``ray start``/``ray stop`` wrappers and the driver's connection (loopback-safe defaults);
- ``remote``: what runs on a node (probe; fetch the model into the node's cache, run the cell);
- ``executor``: ``FleetExecutor``, the ``bench.orchestrate.Executor`` that places and runs cells.

Only this package imports Ray, and only when a fleet is used: the core suite never needs it.
"""

from __future__ import annotations

from types import ModuleType

from bench.errors import BenchError

RAY_VERSION = "2.60.0"  # pinned by the `fleet` extra in pyproject.toml
INSTALL_HINT = f"pip install -e '.[fleet]' (ray=={RAY_VERSION})"


def require_ray() -> ModuleType:
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BenchError(f"the fleet needs Ray: {INSTALL_HINT}") from None
    return ray
