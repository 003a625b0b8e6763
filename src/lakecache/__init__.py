"""lakecache: versioned datasets in the data lake, cached next to the compute.

The public API is exactly ``__all__``; everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Dataset", "Job", "Settings", "LakecacheError", "submit", "use", "__version__"]

if TYPE_CHECKING:
    from lakecache.cache.api import use
    from lakecache.compute.sdk import Job, submit
    from lakecache.data.dataset import Dataset
    from lakecache.errors import LakecacheError
    from lakecache.settings import Settings


def __getattr__(name: str) -> Any:
    # Lazy: `import lakecache` stays cheap, so every CLI command starts fast.
    if name == "Dataset":
        from lakecache.data.dataset import Dataset

        return Dataset
    if name == "Settings":
        from lakecache.settings import Settings

        return Settings
    if name == "use":
        from lakecache.cache.api import use

        return use
    if name in ("Job", "submit"):
        from lakecache.compute import sdk

        return getattr(sdk, name)
    if name == "LakecacheError":
        from lakecache.errors import LakecacheError

        return LakecacheError
    raise AttributeError(f"module 'lakecache' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The names above load lazily, so without this `dir(lakecache)` and tab
    # completion would show none of them.
    return sorted({*globals(), *__all__})
