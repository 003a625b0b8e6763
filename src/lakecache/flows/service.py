"""Flow runs as the CLI and the Python API reach them: in the catalog, or through a server.

Both answer with the same JSON-shaped dicts the server's API returns (a run
with ``tasks``, each with its ``depth`` in the DAG), so the CLI prints one
way whichever it talks to.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lakecache.flows.spec import FlowSpec

if TYPE_CHECKING:
    from lakecache.client.connection import ServerConnection
    from lakecache.data.hub import Hub
    from lakecache.flows.store import FlowTaskRecord


class Flows(Protocol):
    def start(
        self, text: str, source: str, params: Mapping[str, Any], code: str
    ) -> dict[str, Any]: ...

    def list_runs(
        self, *, states: Sequence[str] = (), flow: str | None = None
    ) -> list[dict[str, Any]]: ...

    def show(self, run_id: int) -> dict[str, Any]: ...

    def cancel(self, run_id: int) -> dict[str, Any]: ...

    def resume(self, run_id: int) -> dict[str, Any]: ...

    def wait(self, run_id: int, timeout: float | None = None) -> dict[str, Any]: ...


def depths(tasks: Sequence[FlowTaskRecord]) -> dict[str, int]:
    """Each task's level in the DAG: 0 without deps, else one more than its deepest dep."""
    out: dict[str, int] = {}
    for t in tasks:  # plan order: deps come first
        out[t.name] = 1 + max((out[d] for d in t.spec.deps), default=-1)
    return out


def run_view(engine: Any, run_id: int) -> dict[str, Any]:
    """The run and its tasks (with depth), as the API returns them."""
    run = engine.store.get_run(run_id)
    tasks = engine.store.tasks(run_id)
    level = depths(tasks)
    data = run.as_dict()
    data["tasks"] = [{**t.as_dict(), "depth": level[t.name]} for t in tasks]
    return data


class LocalFlows:
    """Flows in ``hub``'s catalog; runs advance in this process while waited on."""

    def __init__(self, hub: Hub) -> None:
        from lakecache.flows.engine import FlowEngine

        self.engine = FlowEngine(hub)

    def start(self, text: str, source: str, params: Mapping[str, Any], code: str) -> dict[str, Any]:
        flow = FlowSpec.from_text(text, source)
        run_id = self.engine.start(flow, params, code=code)
        return run_view(self.engine, run_id)

    def list_runs(
        self, *, states: Sequence[str] = (), flow: str | None = None
    ) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.engine.store.list_runs(states=states or None, flow=flow)]

    def show(self, run_id: int) -> dict[str, Any]:
        return run_view(self.engine, run_id)

    def cancel(self, run_id: int) -> dict[str, Any]:
        self.engine.cancel(run_id)
        return run_view(self.engine, run_id)

    def resume(self, run_id: int) -> dict[str, Any]:
        self.engine.resume(run_id)
        return run_view(self.engine, run_id)

    def wait(self, run_id: int, timeout: float | None = None) -> dict[str, Any]:
        self.engine.wait(run_id, timeout)
        return run_view(self.engine, run_id)


class RemoteFlows:
    """Flows through a lakecache server (``lakecache login``); the server advances them."""

    def __init__(self, server: ServerConnection) -> None:
        self.server = server

    def start(self, text: str, source: str, params: Mapping[str, Any], code: str) -> dict[str, Any]:
        body = {"source": text, "source_name": source, "params": dict(params), "code_version": code}
        return self.server.call("POST", "/flows/runs", json=body)  # type: ignore[no-any-return]

    def list_runs(
        self, *, states: Sequence[str] = (), flow: str | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if states:
            params["state"] = list(states)
        if flow:
            params["flow"] = flow
        return self.server.call("GET", "/flows/runs", params=params)["items"]  # type: ignore[no-any-return]

    def show(self, run_id: int) -> dict[str, Any]:
        return self.server.call("GET", f"/flows/runs/{int(run_id)}")  # type: ignore[no-any-return]

    def cancel(self, run_id: int) -> dict[str, Any]:
        return self.server.call("POST", f"/flows/runs/{int(run_id)}/cancel")  # type: ignore[no-any-return]

    def resume(self, run_id: int) -> dict[str, Any]:
        return self.server.call("POST", f"/flows/runs/{int(run_id)}/resume")  # type: ignore[no-any-return]

    def wait(self, run_id: int, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (run := self.show(run_id))["state"] == "running":
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"flow run {run_id} still running after {timeout} s")
            time.sleep(0.5)
        return run


def flows_of(hub: Hub) -> Flows:
    """Flows as ``hub`` reaches them: through its server when logged in, else the catalog."""
    server = hub.server
    if server is not None:
        return RemoteFlows(server)
    return LocalFlows(hub)


def read_flow_file(path: str | Path) -> tuple[str, str]:
    """(text, file name) of a flow file, with an error that says what to do."""
    from lakecache.errors import UserError

    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), p.name
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read flow file {str(p)!r}: {exc}",
            hint="Pass the path of a YAML flow file (see `lakecache flow run --help`).",
        ) from None
