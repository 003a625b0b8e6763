"""The public API is exactly ``__all__``, and ``dir(lakecache)`` shows it despite lazy loading."""

from __future__ import annotations

import subprocess
import sys

import lakecache


def test_every_public_name_resolves_and_dir_shows_it() -> None:
    for name in lakecache.__all__:
        assert getattr(lakecache, name) is not None
    assert set(lakecache.__all__) <= set(dir(lakecache))


def test_dir_is_complete_before_anything_is_loaded() -> None:
    # A fresh interpreter: nothing imported lazily yet, as in a user's first REPL.
    out = subprocess.run(
        [sys.executable, "-c", "import lakecache; print(' '.join(dir(lakecache)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"Dataset", "use", "Settings", "LakecacheError"} <= set(out)
