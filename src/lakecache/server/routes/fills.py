"""What the workers of a cache report: fills, evictions, verifies, and leases held by runs.

A cache is filled, verified and evicted at its site, by whoever mounts the
volume: the server's own agent, ``lakecache agent`` at a site, or a CLI or
``lakecache.use()`` filling in place. The ones that work through this server
drive the cache's state with these steps, each a compare-and-set on the row,
so that however many workers race, one fills and the others wait:

=====================================  ========  ==========================================
step                                   role      what
=====================================  ========  ==========================================
``POST /caches/{id}/claim``            writer    pending (or stale filling) -> filling by me
``POST /caches/{id}/heartbeat``        writer    I am alive, ``done_bytes`` written
``POST /caches/{id}/ready``            writer    filling -> ready (published)
``POST /caches/{id}/failed``           writer    filling -> failed, with the reason
``POST /caches/{id}/eviction``         writer    ready/failed (or stale evicting) -> evicting
``POST /caches/{id}/evicted``          writer    evicting -> evicted (files gone)
``PUT /caches/{id}/report``            writer    the outcome of a verify
``POST /caches/{id}/requests``         writer    leave evict/verify/repair for the agent
``DELETE /caches/{id}/requests/{r}``   writer    take that work (one agent gets it)
``POST /caches/{id}/leases``           reader    hold a ready cache while a run reads it
``PUT|DELETE /leases/{id}``            reader    renew or release my lease
=====================================  ========  ==========================================

Fencing: a claim (``claim``, ``eviction``) answers a ``token``; heartbeat,
ready, failed and evicted must present it. A token that is no longer the
cache's (the worker stalled past the stale time and a newer one took over)
gets 409 ``taken_over``: the worker must stop, and remove only its own
staging. Heartbeat, ready and failed are accepted only from the user who
claimed the fill (or an org admin); a lease is renewed or released only by
its holder; a lease that lapsed and lost its cache to an eviction is gone
(404 on renew or release, which the client reports to its holder).
The agent user of a cache's site counts as a writer for every step but
``requests`` (leaving work), and sees no other site's caches.
Times are the server's clock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response

from lakecache.catalog.topology import EVICTION_STALE_AFTER, CacheRecord
from lakecache.errors import ConflictError, NotFoundError
from lakecache.server.auth import Plane, Principal, User
from lakecache.server.errors import COMMON_RESPONSES, PermissionDeniedError
from lakecache.server.models import (
    BeatIn,
    CacheOut,
    ClaimIn,
    EvictedIn,
    FillDoneIn,
    FillFailedIn,
    LeaseIn,
    LeaseOut,
    LeaseRenewIn,
    ReportIn,
    RequestIn,
    TransitionOut,
)
from lakecache.server.routes.caches import CacheId, cache_or_404, caches_out
from lakecache.server.runtime import ControlPlane

router = APIRouter(tags=["cache workers"], responses=COMMON_RESPONSES)

LeaseId = Annotated[int, Path(ge=1, le=2**62)]


def _owner_prefix(principal: Principal) -> str:
    return f"{principal.user.name}/"


def _outcome(
    plane: ControlPlane, cache_id: int, done: bool, token: int | None = None
) -> TransitionOut:
    rec = plane.topology.get_cache(cache_id, plane.clock.now())
    return TransitionOut(done=done, cache=caches_out(plane, [rec])[0], token=token)


def _record_fill(
    plane: ControlPlane, rec: CacheRecord, outcome: str, seconds: float, body: FillDoneIn | None
) -> None:
    """Count a fill run elsewhere in /metrics, as the server's own agents' fills are."""
    m = plane.metrics
    if body is not None:
        m.fill_bytes.labels(rec.site, rec.volume, "fetched").inc(body.fetched_bytes)
        m.fill_bytes.labels(rec.site, rec.volume, "linked").inc(body.linked_bytes)
    # The claim set updated_at; a clock step backwards must not make a negative duration.
    m.fill_duration.labels(rec.site, rec.volume, outcome).observe(max(seconds, 0.0))


def _worked(plane: ControlPlane, principal: Principal, cache_id: int) -> CacheRecord:
    """A cache the caller may work: writers of its dataset, or its site's agent user."""
    if principal.user.agent_site is not None:
        return cache_or_404(plane, principal, cache_id, "reader")  # its own site's only
    return cache_or_404(plane, principal, cache_id, "writer")


def _claimant(plane: ControlPlane, principal: Principal, cache_id: int) -> CacheRecord:
    """The cache, if the caller is the user filling it (org admins may stand in)."""
    rec = _worked(plane, principal, cache_id)
    if not principal.org_admin and not (rec.worker or "").startswith(_owner_prefix(principal)):
        raise ConflictError(
            f"cache {rec.name} is not being filled by you ({rec.state})",
            hint="Claim it first (POST /api/v1/caches/{id}/claim); another worker may have it.",
        )
    return rec


@router.post("/caches/{cache_id}/claim", response_model=TransitionOut)
def claim(cache_id: CacheId, body: ClaimIn, principal: User, plane: Plane) -> TransitionOut:
    """Take the fill of a pending cache, or of one whose filler stopped heart-beating.

    ``token`` is the claim's fence token: present it in every later step.
    """
    _worked(plane, principal, cache_id)
    token = plane.topology.claim_fill(
        cache_id,
        _owner_prefix(principal) + body.worker,
        now=plane.clock.now(),
        stale_after=timedelta(seconds=body.stale_after_seconds),
    )
    return _outcome(plane, cache_id, token is not None, token)


@router.post("/caches/{cache_id}/heartbeat", response_model=TransitionOut)
def heartbeat(cache_id: CacheId, body: BeatIn, principal: User, plane: Plane) -> TransitionOut:
    """The filler is alive; 409 ``taken_over`` once a newer worker has the fill."""
    _claimant(plane, principal, cache_id)
    done = plane.topology.beat_fill(
        cache_id, token=body.token, done_bytes=body.done_bytes, now=plane.clock.now()
    )
    return _outcome(plane, cache_id, done)


@router.post("/caches/{cache_id}/ready", response_model=TransitionOut)
def fill_ready(cache_id: CacheId, body: FillDoneIn, principal: User, plane: Plane) -> TransitionOut:
    """The fill is published on the volume: the cache is ready."""
    rec = _claimant(plane, principal, cache_id)
    now = plane.clock.now()
    done = plane.topology.complete_fill(
        cache_id,
        token=body.token,
        linked_bytes=body.linked_bytes,
        fetched_bytes=body.fetched_bytes,
        now=now,
    )
    if done:
        _record_fill(plane, rec, "ready", (now - rec.updated_at).total_seconds(), body)
    return _outcome(plane, cache_id, done)


@router.post("/caches/{cache_id}/failed", response_model=TransitionOut)
def fill_failed(
    cache_id: CacheId, body: FillFailedIn, principal: User, plane: Plane
) -> TransitionOut:
    """The fill failed; ``reason`` is what `cache ls` and the dashboard show."""
    rec = _claimant(plane, principal, cache_id)
    now = plane.clock.now()
    done = plane.topology.fail_fill(cache_id, token=body.token, reason=body.reason, now=now)
    if done:
        _record_fill(plane, rec, "failed", (now - rec.updated_at).total_seconds(), None)
    return _outcome(plane, cache_id, done)


@router.post("/caches/{cache_id}/eviction", response_model=TransitionOut)
def start_eviction(cache_id: CacheId, principal: User, plane: Plane) -> TransitionOut:
    """Start removing a cache's files; ``done`` is false while a lease or a pin holds it.

    Also takes over an eviction left ``evicting`` by a worker that stopped. Serialised
    with leasing on the cache row. ``token`` fences the end of the eviction.
    """
    _worked(plane, principal, cache_id)
    token = plane.topology.start_eviction(
        cache_id,
        now=plane.clock.now(),
        worker=_owner_prefix(principal) + "evictor",
        stale_after=EVICTION_STALE_AFTER,
    )
    return _outcome(plane, cache_id, token is not None, token)


@router.post("/caches/{cache_id}/evicted", response_model=TransitionOut)
def finish_eviction(
    cache_id: CacheId, body: EvictedIn, principal: User, plane: Plane
) -> TransitionOut:
    """The cache's files are gone from its volume; 409 ``taken_over`` for a stale token."""
    _worked(plane, principal, cache_id)
    done = plane.topology.finish_eviction(cache_id, token=body.token, now=plane.clock.now())
    return _outcome(plane, cache_id, done)


@router.put("/caches/{cache_id}/report", response_model=CacheOut)
def set_report(cache_id: CacheId, body: ReportIn, principal: User, plane: Plane) -> CacheOut:
    """Record the outcome of a verify."""
    _worked(plane, principal, cache_id)
    plane.topology.set_report(cache_id, body.report)
    return _outcome(plane, cache_id, True).cache


@router.post("/caches/{cache_id}/requests", response_model=CacheOut, status_code=202)
def ask(cache_id: CacheId, body: RequestIn, principal: User, plane: Plane) -> CacheOut:
    """Leave work on a cache for its site's agent: ``evict``, ``verify`` or ``repair``."""
    cache_or_404(plane, principal, cache_id, "writer")
    plane.topology.ask(cache_id, body.request)
    return _outcome(plane, cache_id, True).cache


@router.delete("/caches/{cache_id}/requests/{request}", response_model=TransitionOut)
def take_request(
    cache_id: CacheId,
    request: Literal["evict", "verify", "repair"],
    principal: User,
    plane: Plane,
) -> TransitionOut:
    """Take the work left on a cache; of several agents exactly one gets ``done``."""
    _worked(plane, principal, cache_id)
    return _outcome(plane, cache_id, plane.topology.take_request(cache_id, request))


# -- leases ---------------------------------------------------------------------------------


def _lease_out(plane: ControlPlane, lease_id: int, expires_in: float) -> LeaseOut:
    cache_id, holder = plane.topology.lease_holder(lease_id)
    return LeaseOut(
        id=lease_id,
        cache_id=cache_id,
        holder=holder,
        expires_at=plane.clock.now() + timedelta(seconds=expires_in),
    )


def _own_lease(plane: ControlPlane, principal: Principal, lease_id: int) -> None:
    """404 for a lease that is gone or on a hidden dataset; 403 for someone else's."""
    try:
        cache_id, holder = plane.topology.lease_holder(lease_id)
    except NotFoundError:
        raise NotFoundError(f"no lease with id {lease_id}", hint="It was released.") from None
    try:
        cache_or_404(plane, principal, cache_id, "reader")
    except NotFoundError:
        raise NotFoundError(f"no lease with id {lease_id}", hint="It was released.") from None
    if not principal.org_admin and not holder.startswith(_owner_prefix(principal)):
        raise PermissionDeniedError(
            f"lease {lease_id} is held by another user", hint="Renew or release your own leases."
        )


@router.post("/caches/{cache_id}/leases", response_model=LeaseOut, status_code=201)
def add_lease(cache_id: CacheId, body: LeaseIn, principal: User, plane: Plane) -> LeaseOut:
    """Hold a ready cache while a run reads it: it is not evicted until released or lapsed.

    Renew it (PUT /leases/{id}) before ``ttl_seconds`` pass. 409 if the cache
    is not ready (ask for it again).
    """
    rec = cache_or_404(plane, principal, cache_id, "reader")
    now = plane.clock.now()
    if rec.state != "ready":
        raise ConflictError(
            f"cache {rec.name} is {rec.state}, not ready",
            hint="Ask for it again (POST /api/v1/datasets/{dataset}/caches).",
        )
    lease = plane.topology.add_lease(
        cache_id,
        _owner_prefix(principal) + body.holder,
        now=now,
        expires_at=now + timedelta(seconds=body.ttl_seconds),
    )
    return _lease_out(plane, lease, body.ttl_seconds)


@router.put("/leases/{lease_id}", response_model=LeaseOut)
def renew_lease(lease_id: LeaseId, body: LeaseRenewIn, principal: User, plane: Plane) -> LeaseOut:
    """Keep holding: the lease now ends ``ttl_seconds`` from now."""
    _own_lease(plane, principal, lease_id)
    now = plane.clock.now()
    plane.topology.renew_lease(
        lease_id, now=now, expires_at=now + timedelta(seconds=body.ttl_seconds)
    )
    return _lease_out(plane, lease_id, body.ttl_seconds)


@router.delete("/leases/{lease_id}", status_code=204, response_class=Response)
def release_lease(lease_id: LeaseId, principal: User, plane: Plane) -> Response:
    """Stop holding the cache (its TTL counts from now)."""
    _own_lease(plane, principal, lease_id)
    plane.topology.release_lease(lease_id, now=plane.clock.now())
    return Response(status_code=204)
