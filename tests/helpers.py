"""Small helpers shared by tests."""

from __future__ import annotations

import os
from pathlib import Path


def write(root: Path, rel: str, data: bytes, *, age: float = 0.0) -> Path:
    """Write a file; ``age`` seconds in the past keeps it out of the stat cache's racy window."""
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if age:
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - int(age * 1e9)))
    return p


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def make_files(root: Path, n: int = 60, size: int = 20_000, seed: int = 0) -> Path:
    import random

    rng = random.Random(seed)
    for i in range(n):
        write(
            root, f"{['Edema', 'Mass', 'Hernia'][i % 3]}/{i:05d}.png", rng.randbytes(size), age=10
        )
    return root
