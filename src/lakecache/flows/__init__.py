"""Flows: DAGs of tasks, each task a job, with fan-out, outputs passed downstream,
retries, timeouts and memoisation (see :mod:`lakecache.flows.spec` for the file).

From Python::

    from lakecache.flows import FlowSpec, run_flow
    flow = FlowSpec.from_yaml("flows/resnet.yaml")
    run = run_flow(flow, params={"epochs": 3}, wait=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakecache.flows.spec import FlowSpec, FlowSpecError, Plan, Problem

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lakecache.data.hub import Hub
    from lakecache.flows.store import FlowRunRecord
    from lakecache.settings import Settings

__all__ = ["FlowSpec", "FlowSpecError", "Plan", "Problem", "run_flow"]


def run_flow(
    flow: FlowSpec,
    *,
    params: Mapping[str, Any] | None = None,
    wait: bool = False,
    timeout: float | None = None,
    settings: Settings | None = None,
    hub: Hub | None = None,
) -> FlowRunRecord:
    """Check ``flow``, start a run of it, and (``wait``) advance it here until it ends.

    Args:
        flow: the flow (:meth:`FlowSpec.from_yaml` or built in Python).
        params: overrides, as ``--param``: ``{"lr": 0.1}`` or ``{"train.lr": [0.1, 0.2]}``.
        wait: advance the run in this process until it ends.
        timeout: with ``wait``, give up (TimeoutError) after this many seconds.
        settings: where the catalog is (default ``Settings.load()``).
        hub: an open hub to use instead.

    Returns:
        The run's record (final, with ``wait``).

    Raises:
        FlowSpecError: every mistake of the flow at once; nothing ran.
    """
    from lakecache.data.hub import Hub as _Hub
    from lakecache.flows.engine import FlowEngine, code_version

    own = hub is None
    if hub is None:
        if settings is None:
            from lakecache.settings import Settings as _Settings

            settings = _Settings.load()
        hub = _Hub(settings)
    try:
        engine = FlowEngine(hub)
        from pathlib import Path

        code = code_version(Path(flow.origin).parent) if flow.origin else "none"
        run_id = engine.start(flow, params, code=code)
        if wait:
            return engine.wait(run_id, timeout)
        return engine.store.get_run(run_id)
    finally:
        if own:
            hub.close()
