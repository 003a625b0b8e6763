"""What every command group shares: the hub of this invocation and the --json flag."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lakecache.cache.service import CacheService
    from lakecache.data.hub import Hub

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def get_hub() -> Hub:
    """One Hub per CLI invocation, closed when the command ends."""
    root = click.get_current_context().find_root()
    hub = root.meta.get("lakecache.hub")
    if hub is None:
        from lakecache.data.hub import Hub
        from lakecache.settings import Settings

        hub = root.meta["lakecache.hub"] = Hub(Settings.load())
        root.call_on_close(hub.close)
    return hub  # type: ignore[no-any-return]


def get_caches() -> CacheService:
    from lakecache.cache.service import CacheService

    return CacheService(get_hub())
