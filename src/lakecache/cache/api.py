"""``lakecache.use``: the one call a training script needs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lakecache.data.hub import Hub
    from lakecache.settings import Settings


@contextmanager
def use(
    spec: str,
    *,
    site: str | None = None,
    volume: str | None = None,
    path: str = "",
    cached: bool = True,
    settings: Settings | None = None,
    hub: Hub | None = None,
) -> Iterator[Path]:
    """Yield a local folder holding the commit ``spec`` (``"xray@v3"``) while the block runs.

    With ``cached=True`` (default) this is the site's cache: filled first if
    missing (or waited for, if someone else fills it), and held by a lease so
    it is never evicted while in use. With ``cached=False`` the files are
    pulled straight from the lake into a private temporary folder, deleted
    afterwards. Paths inside are the commit's own (``folder/file.png``).

    Logged in to a server (``lakecache login``), the cache and its lease are the
    server's: a writer's call fills a missing cache here when this machine
    mounts the volume, a reader's waits for a writer or the site's agent to
    fill it (AccessDeniedError when nobody has asked for it yet).
    """
    from lakecache.cache.service import CacheService
    from lakecache.data.dataset import Dataset, split_ref
    from lakecache.data.hub import Hub as _Hub

    name, ref = split_ref(spec)
    own = hub is None
    if hub is None:
        if settings is None:
            from lakecache.settings import Settings as _Settings

            settings = _Settings.load()
        hub = _Hub(settings)
    try:
        if not cached:
            tmp = Path(tempfile.mkdtemp(prefix=f"lakecache-{name}-"))
            try:
                Dataset(name, hub=hub).pull(ref, tmp, [path] if path else None)
                yield tmp
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        with CacheService(hub).use(name, ref, site=site, volume=volume, path=path) as p:
            yield p
    finally:
        if own:
            hub.close()
