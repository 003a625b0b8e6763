"""Progress reporting for long work, kept apart from how it is drawn.

The data layer calls a :class:`Progress`; the CLI passes one that draws a rich
bar (files/s, MB/s, ETA), the SDK passes :class:`NullProgress` unless asked.
Calls come from the coordinating thread only.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def begin(self, label: str, total_files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, nbytes: int) -> None: ...

    def end(self) -> None: ...


class NullProgress:
    def begin(self, label: str, total_files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def end(self) -> None:
        pass
