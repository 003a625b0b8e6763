"""Who may see and log to what in tracking (pure rules; the server and pages apply them).

* Org admins see everything.
* An experiment is seen by its owner, by everyone when it is shared (owner
  empty: ``Default``, ``jobs``, flows' experiments), and by anyone who has a
  run in it.
* A run is seen by its user (who started it, or whose job it is), by the
  owner of its experiment, and by org admins; in a shared experiment each user
  sees their own runs only.
* A run is logged to by its user, by its job's own token (that job only), and
  by the agent of the site its job runs at.

Someone who may not see a run gets the same 404 as for a run that does not exist.
"""

from __future__ import annotations

from lakecache.tracking.model import ExperimentRecord, RunRecord


def can_see_run(run: RunRecord, user: str, *, org_admin: bool) -> bool:
    return org_admin or run.user == user or (run.experiment_owner == user and user != "")


def can_see_experiment(exp: ExperimentRecord, user: str, *, org_admin: bool, has_run: bool) -> bool:
    return org_admin or exp.owner in ("", user) or has_run
