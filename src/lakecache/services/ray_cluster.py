"""A real Ray cluster of several nodes on this machine, for tests and demos.

Each node stands for a site: it declares a custom resource ``site:<name>`` (plus
cores and memory of its own, and ``LAKECACHE_RAY_SITE`` in its workers'
environment, so a test can see where a task ran), and the ``ray`` backend pins a site's tasks to it.
Two things this kind of machine needs:

* every node and the driver use 127.0.0.1; Ray rewrites a loopback address to the
  machine's "outward" address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set
  before Ray is imported (it is read at import), so :func:`start_ray_cluster` sets
  it and refuses to go on if Ray was imported without it;
* ``ray stop`` would end every Ray process on the machine, so the cluster is this
  process's own ``ray.cluster_utils.Cluster``, stopped by :meth:`RayCluster.stop`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = "Install Ray with pip install 'lakecache[ray]' (make test does it)."


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or was imported before the loopback setting."""


@dataclass
class RayCluster:
    """A running cluster: its GCS address, and its nodes by site."""

    address: str
    cluster: Any

    def stop(self) -> None:
        """Disconnect this process's driver and stop every node of this cluster."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()


def start_ray_cluster(
    tmpdir: Path, sites: Mapping[str, int], memory: int = 4 * 10**9
) -> RayCluster:
    """Start one node per site (the first is the head) with ``sites[name]`` cores each.

    ``tmpdir`` becomes RAY_TMPDIR (short: Ray's socket paths have a length limit).
    """
    if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        raise RayUnavailableError(
            "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set; "
            "its nodes would not find each other on 127.0.0.1"
        )
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    (tmpdir / "ray").mkdir(parents=True, exist_ok=True)  # Ray's files go to RAY_TMPDIR/ray
    os.environ["RAY_TMPDIR"] = str(tmpdir)
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        raise RayUnavailableError(f"ray is not installed. {INSTALL_HINT}") from None
    names = list(sites)
    common: dict[str, Any] = {
        "node_ip_address": "127.0.0.1",
        "memory": memory,
        "object_store_memory": 80 * 1024 * 1024,
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            "num_cpus": sites[names[0]],
            "resources": {f"site:{names[0]}": 1000},
            "env_vars": {"LAKECACHE_RAY_SITE": names[0]},
            "include_dashboard": False,
        },
    )
    try:
        for name in names[1:]:
            cluster.add_node(
                **common,
                num_cpus=sites[name],
                resources={f"site:{name}": 1000},
                env_vars={"LAKECACHE_RAY_SITE": name},
            )
        cluster.wait_for_nodes()
    except BaseException:
        cluster.shutdown()
        raise
    return RayCluster(str(cluster.address), cluster)
