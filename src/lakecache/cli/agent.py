"""``lakecache agent``: the worker at a site that fills, verifies and evicts its caches."""

from __future__ import annotations

import logging
import signal

import click

from lakecache.cli.common import get_caches


@click.command()
@click.option("--site", "-s", required=True, help="The site whose volumes this machine mounts.")
@click.option("--max-fills", default=2, show_default=True, help="Fills at once.")
@click.option(
    "--interval", default=1.0, show_default=True, help="Seconds between polls of the catalog."
)
@click.option("--once", is_flag=True, help="One pass, wait for its fills, then exit.")
@click.option(
    "--jobs/--no-jobs",
    default=True,
    show_default=True,
    help="Also run the jobs placed on SITE's compute (from the catalog, or the server).",
)
def agent(site: str, max_fills: int, interval: float, once: bool, jobs: bool) -> None:
    """Run the site agent: take fill, verify and evict work for SITE's volumes.

    It takes the work from the catalog, or, logged in (`lakecache login`), from
    the server. Log in as the site's agent user (`lakecache user add NAME
    --agent-site SITE`, by an org admin): it may work that site's caches and
    nothing else. It only connects outward (to the catalog or the server, and
    the lake), so it works behind a firewall. Run it where the site's volumes
    are mounted. Stop it with Ctrl-C; fills in flight finish or resume later.
    """
    from lakecache.cache.agent import SiteAgent
    from lakecache.server.logs import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    quiet_libraries()  # no line per poll: the agent's log says what it did, not that it asked
    svc = get_caches()
    svc.topology.get_site(site)
    a = SiteAgent(svc, site, max_fills=max_fills, interval=interval)
    from lakecache.compute.runner import JobRunner

    runner = JobRunner(svc, site) if jobs else None
    # Directly (no server), the agent also advances flow runs: submits their ready tasks.
    from lakecache.flows.engine import FlowAdvancer

    flows = FlowAdvancer(svc.hub) if jobs and svc.hub.server is None else None
    if once:
        if flows is not None:
            flows.engine.advance_all()
        a.run_once()
        if runner is not None:
            runner.run_once()
            runner.wait_idle()
        if flows is not None:
            flows.engine.advance_all()
        a.wait_idle()
        a.close()
        return
    import threading

    job_loop = threading.Thread(target=runner.run_forever, daemon=True) if runner else None

    def stop(*_: object) -> None:
        a.stop_event.set()
        if runner is not None:
            runner.stop_event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    if runner is not None:
        # The hooks' one-time work (tracking reads the environment it records: every
        # package's metadata) before the agent says it runs, not under its first jobs.
        from lakecache.compute.hooks import warm_up

        warm_up().join()
    click.echo(f"agent for site {site} running; Ctrl-C to stop", err=True)
    if job_loop is not None:
        job_loop.start()
    if flows is not None:
        flows.start()
    a.run_forever()
    if flows is not None:
        flows.stop()
    if job_loop is not None:
        job_loop.join()  # its jobs in flight are stopped and given back to the queue
