"""Is anyone filling a site's caches? An agent's presence, as its space reports show it.

Every site agent reports each mounted volume's free and total space once a
minute (:meth:`lakecache.cache.agent.SiteAgent.report_space`), to the catalog
or through the server. That report doubles as a heartbeat: a site none of
whose volumes reported for :data:`AGENT_SEEN_WITHIN` has no live agent, so a
cache asked for there stays ``pending`` until someone starts one. Every
surface says so in the same words (:func:`no_agent_note`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lakecache.catalog.topology import VolumeRecord

#: Three missed space reports (one a minute) and a site counts as having no agent.
AGENT_SEEN_WITHIN = timedelta(minutes=3)


def agent_seen_at(volumes: Iterable[VolumeRecord]) -> dict[str, datetime]:
    """The last time an agent reported from each site, by site name (sites never heard of
    are absent)."""
    seen: dict[str, datetime] = {}
    for v in volumes:
        if v.fs_reported_at is not None and (v.site not in seen or v.fs_reported_at > seen[v.site]):
            seen[v.site] = v.fs_reported_at
    return seen


def sites_with_agent(
    volumes: Iterable[VolumeRecord], now: datetime, *, running_here: Iterable[str] = ()
) -> set[str]:
    """Sites with a live agent: one that reported recently, or runs in this process."""
    live = {site for site, at in agent_seen_at(volumes).items() if now - at <= AGENT_SEEN_WITHIN}
    return live | set(running_here)


def no_agent_note(site: str) -> str:
    """What to tell someone whose cache waits at a site with no agent."""
    return f"no agent at {site}: run `lakecache agent --site {site}` on a machine that mounts it"
