"""Compute in the catalog: capacity, templates, queues, jobs, attempts and timelines.

Reached as ``ComputeStore(catalog)``. Every method that depends on time takes
``now`` from the caller, so tests drive a clock of their own.

Concurrency, the part callers must be able to trust:

* **Admission** is a compare-and-swap, never a decision held in one process's
  memory. A compute resource's usage is the sum of the slots its ``placed`` and
  ``running`` jobs hold; its ``admissions`` counter is read before that sum.
  Placing a job bumps the counter only if it is still the value read, and moves
  the job ``queued -> placed`` only if it is still queued, in one transaction.
  Two schedulers that saw the same free room cannot both admit into it: the
  second swap matches no row, and that scheduler plans again from fresh figures.
  Usage only grows through such a swap; releases (a job ending, or requeued)
  only free room, so a plan made before a release stays safe.
* **Attempts are fenced.** Starting a placed job bumps its ``attempt`` (the
  fencing token). Heartbeats, timeline entries and the final report carry the
  token and change nothing once it is stale: an agent that was declared dead,
  whose job was requeued and started elsewhere, can never report over the new
  attempt.
* **Requeue** of a job whose agent stopped heart-beating is a compare-and-swap
  on (state, attempt, heartbeat), so of several agents sweeping at once one
  requeues it, once.

Layers, each a module and a class that extends the one before:
:mod:`~lakecache.compute.pools` (capacity, templates, queues),
:mod:`~lakecache.compute.jobs` (submit, read, timelines, outputs),
:mod:`~lakecache.compute.admission` (placement, deadlines, runners' presence) and
:mod:`~lakecache.compute.attempts` (claims, heartbeats, ends, cancels).
"""

from __future__ import annotations

from lakecache.compute.admission import ADMIT_TRIES
from lakecache.compute.attempts import Attempts

__all__ = ["ADMIT_TRIES", "ComputeStore"]


class ComputeStore(Attempts):
    """Queries and transitions of compute. Safe to share between threads."""
