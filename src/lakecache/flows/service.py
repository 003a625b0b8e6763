"""Flow runs as the CLI and the Python API reach them: in the catalog, or through a server.

Both answer with the same JSON-shaped dicts the server's API returns (a run
with ``tasks``, each with its ``depth`` in the DAG), so the CLI prints one
way whichever it talks to.

Whose commits a run's outputs are. A task's outputs are committed by whichever
process advances the run (the server's flow thread, an agent, ``--wait``), but
as the run's owner: the commit names them as its author, and an owner with an
account (a run started through a server) must be allowed to write each
dataset, checked when the run starts (:func:`check_output_rights`) and again
at each commit (:func:`commit_as`), so that a role taken away midway stops the
next commit. A dataset that does not exist yet is created owned by them. A run
started directly on the catalog (no server, so no accounts to check: whoever
holds the catalog may write anything) commits as its ``submitted_by``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lakecache.errors import AlreadyExistsError, ConflictError, NotFoundError, UserError
from lakecache.flows.spec import ARTIFACTS_PREFIX, FlowSpec

if TYPE_CHECKING:
    from lakecache.catalog.accounts import Accounts
    from lakecache.catalog.accounts.base import UserRecord
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


# -- whose commits a run's outputs are ---------------------------------------------------


class OutputRightsError(UserError):
    """The run's owner may not write a dataset its outputs go to."""


def output_datasets(flow: FlowSpec) -> list[str]:
    """The datasets a run of ``flow`` commits to: its artifacts dataset (every task's
    outputs folder), then each ``dataset:`` output's, in the file's order."""
    names = [f"{ARTIFACTS_PREFIX}{flow.name}"]
    for task in flow.tasks:
        for o in task.outputs:
            if o.dataset is not None and o.dataset not in names:
                names.append(o.dataset)
    return names


def check_output_rights(hub: Hub, user: str, flow: FlowSpec) -> None:
    """Refuse a run of ``flow`` by ``user`` (an account) if they may not write one of the
    datasets it commits to (see :func:`output_datasets`): OutputRightsError naming each,
    before anything runs. A dataset that does not exist yet is theirs to create."""
    accounts, account = _account(hub, user)
    if account is None:
        raise OutputRightsError(
            f"no account named {user!r} may start flow runs here",
            hint="Log in as yourself (`lakecache login URL`), then run the flow again.",
        )
    refused = [
        why for name in output_datasets(flow) if (why := _refusal(hub, accounts, account, name))
    ]
    if refused:
        artifacts = f"{ARTIFACTS_PREFIX}{flow.name}"
        hint = (
            f"Ask an admin of each for the writer role. {artifacts!r} holds the outputs of "
            f"every run of flows named {flow.name!r}: give your flow a name of its own "
            "(its `name:` line) to use a dataset of yours."
            if any(artifacts in why for why in refused)
            else "Ask an admin of each for the writer role, or write to a dataset of yours."
        )
        raise OutputRightsError(
            f"flow {flow.name!r} commits its outputs as you, and {'; '.join(refused)}",
            hint=hint,
        )


def commit_as(hub: Hub, dataset: str, folder: Path, message: str, *, user: str) -> str:
    """Commit ``folder`` as the new latest version of ``dataset``, authored by ``user``;
    the commit's id.

    With an account, ``user`` must be allowed to write ``dataset`` now (an org admin
    or its writer or admin; a missing dataset is created owned by them):
    OutputRightsError otherwise, and nothing is committed. Without one (the catalog
    used directly) the dataset is created, if missing, with ``user`` as its owner.
    A commit that loses a race to another one is tried again (five times in all).
    """
    from lakecache.data.commit import commit_folder

    accounts, account = _account(hub, user)
    if account is not None:
        why = _refusal(hub, accounts, account, dataset, create=True)
        if why:
            raise OutputRightsError(
                f"{why}; the task's outputs were not committed",
                hint=f"Ask an admin of {dataset!r} for the writer role, then resume the run "
                "(`lakecache flow resume RUN`).",
            )
    else:
        try:
            hub.catalog.create_dataset(dataset, owner=user)
        except AlreadyExistsError:
            pass
    for attempt in range(5):
        try:
            commit, _ = commit_folder(
                lake=hub.lake,
                catalog=hub.catalog,
                settings=hub.settings.with_(author=user),
                dataset=dataset,
                root=folder,
                message=message,
            )
            return commit.id
        except ConflictError:
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _account(hub: Hub, user: str) -> tuple[Accounts, UserRecord | None]:
    """The catalog's accounts and ``user``'s (None: no such account, or none at all)."""
    from lakecache.catalog.accounts import Accounts

    accounts = Accounts(hub.catalog)
    try:
        return accounts, accounts.get_user(user)
    except NotFoundError:
        return accounts, None


def _refusal(
    hub: Hub, accounts: Accounts, account: UserRecord, dataset: str, *, create: bool = False
) -> str:
    """Why ``account`` may not write ``dataset`` ("" if it may). ``create``: make a missing
    dataset, owned by them (another run may make it first: then their role there counts)."""
    from lakecache.catalog.accounts.members import ROLE_RANK

    who = account.name
    if account.disabled:
        return f"the account {who!r} is disabled"
    if account.agent_site is not None:
        return f"{who!r} is a site's agent user, which writes no dataset"
    exists = _exists(hub, dataset)
    if not exists:
        if not create:
            return ""
        try:
            accounts.create_owned_dataset(dataset, who, now=datetime.now(UTC))
            return ""
        except AlreadyExistsError:
            pass  # made meanwhile: their role there decides
    if account.org_admin:
        return ""
    role = accounts.role_of(account.id, dataset)
    if role is not None and ROLE_RANK[role] >= ROLE_RANK["writer"]:
        return ""
    return f"{who!r} may not write dataset {dataset!r} ({role or 'no role'})"


def _exists(hub: Hub, dataset: str) -> bool:
    from lakecache.errors import DatasetNotFoundError

    try:
        hub.catalog.get_dataset(dataset)
    except DatasetNotFoundError:
        return False
    return True
