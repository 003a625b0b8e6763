"""The group commit's promise when its leader is interrupted: no write it did not run is
reported as committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lakecache.compute.together import GroupCommit


class _Catalog:
    """Stands for a catalog: an interrupt inside a transaction cannot be caused for real."""

    def __init__(self) -> None:
        self.committed: list[str] = []

    @contextmanager
    def _write(self) -> Iterator[list[str]]:
        pending: list[str] = []
        yield pending  # an exception here: nothing of the transaction is committed
        self.committed += pending


class _Interrupt(BaseException):
    """What a signal delivered to the leading thread looks like to it (not an Exception)."""


def test_writes_in_a_batch_whose_leader_is_interrupted_are_never_told_they_committed() -> None:
    group, catalog = GroupCommit(), _Catalog()
    first_in = threading.Event()
    outcomes: dict[str, Any] = {}

    def step(name: str) -> Any:
        def run(conn: list[str]) -> str:
            if name == "slow":
                first_in.set()
                time.sleep(0.4)  # the others queue behind this transaction meanwhile
            if name == "interrupted":
                raise _Interrupt
            conn.append(name)
            return name

        return run

    def call(name: str) -> None:
        try:
            outcomes[name] = group.write(catalog, step(name))
        except BaseException as exc:  # noqa: BLE001 - the outcome is what is checked
            outcomes[name] = exc

    threads = {"slow": threading.Thread(target=call, args=("slow",))}
    threads["slow"].start()
    assert first_in.wait(10)
    for name in ("interrupted", "c", "d"):  # queued in this order: one batch after "slow"
        threads[name] = threading.Thread(target=call, args=(name,))
        threads[name].start()
        time.sleep(0.05)
    for t in threads.values():
        t.join(30)
    assert outcomes["slow"] == "slow" and catalog.committed == ["slow"]
    # The batch (interrupted, c, d) stopped at its first write: its leader (any of the three
    # threads) saw the interrupt, every other caller is told its write was not run.
    interrupted = [n for n, o in outcomes.items() if isinstance(o, _Interrupt)]
    assert len(interrupted) == 1
    for name in {"interrupted", "c", "d"} - set(interrupted):
        assert isinstance(outcomes[name], RuntimeError), outcomes[name]
        assert "not run" in str(outcomes[name])
    # And the group still works afterwards.
    assert group.write(catalog, step("after")) == "after"
    assert catalog.committed == ["slow", "after"]
