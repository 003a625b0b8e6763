"""Which template of a queue a job takes, and why not each of the others: a pure function.

The store calls it with a snapshot of the free capacity and of the sites that
hold a ready cache of the job's ``cached`` inputs, then makes the choice real
with a compare-and-swap (:meth:`lakecache.compute.store.ComputeStore.admit`);
a snapshot gone stale only makes that swap fail and the plan run again.

Rules, in order:

* a template smaller than the job's request is ``too small``; one at a site
  whose agent is down (``down_sites``, for a queue that moves on then) is
  ``no agent``; one whose compute resource has not the template's size free is
  ``full``;
* among templates with room, policy ``order`` takes the first; policy ``data``
  takes the first at a site with a ready cache of every ``cached`` input, and
  the first with room when no such site has room (the cache is filled there);
* every other template with room is ``lower in order``, or ``no cache`` (policy
  ``data``: its site lacks the cache), or ``policy`` (policy ``order`` passed
  over its warm cache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lakecache.compute.model import Resources, TemplateRecord, TemplateVerdict


def plan_placement(
    request: Resources,
    templates: Sequence[TemplateRecord],
    free: Mapping[int, Resources],
    *,
    policy: str,
    warm_sites: frozenset[str] | None,
    down_sites: frozenset[str] = frozenset(),
) -> tuple[TemplateRecord | None, tuple[TemplateVerdict, ...]]:
    """The template to take (None: none has room now) and one verdict per template.

    Args:
        request: what the job asks for.
        templates: the queue's templates, in the queue's order.
        free: free capacity by compute resource id, at the time of the snapshot.
        policy: the queue's policy, ``order`` or ``data``.
        warm_sites: sites holding a ready cache of every ``cached`` input;
            None when the job has no ``cached`` input.
        down_sites: sites whose agent is down, passed over (a queue whose jobs move
            on when an agent is down; empty for one whose jobs wait).

    Returns:
        The chosen template, or None, and the verdicts in the queue's order.
    """
    roomy: list[TemplateRecord] = []
    verdicts: dict[int, TemplateVerdict] = {}
    for tpl in templates:
        if not request.fits_in(tpl.size):
            verdicts[tpl.id] = TemplateVerdict(
                tpl.name,
                tpl.site,
                "too small",
                f"the job asks for {request.describe()}; the template is {tpl.size.describe()}",
            )
        elif tpl.site in down_sites:
            verdicts[tpl.id] = TemplateVerdict(
                tpl.name, tpl.site, "no agent", f"no job runner seen lately at {tpl.site}"
            )
        elif not tpl.size.fits_in(free.get(tpl.compute_id, Resources())):
            left = free.get(tpl.compute_id, Resources())
            verdicts[tpl.id] = TemplateVerdict(
                tpl.name, tpl.site, "full", f"{tpl.compute} has {left.describe()} free"
            )
        else:
            roomy.append(tpl)
    chosen: TemplateRecord | None = None
    if roomy:
        warm = [t for t in roomy if warm_sites is not None and t.site in warm_sites]
        chosen = warm[0] if policy == "data" and warm else roomy[0]
        for tpl in roomy:
            at_warm = warm_sites is not None and tpl.site in warm_sites
            if tpl is chosen:
                if warm_sites is None:
                    why = "the first template with room"
                elif at_warm:
                    why = "the first template with room at a site with a ready cache of the inputs"
                else:
                    why = "the first template with room; its site's cache is filled before start"
                verdicts[tpl.id] = TemplateVerdict(tpl.name, tpl.site, "chosen", why)
            elif policy == "data" and warm_sites is not None and not at_warm:
                verdicts[tpl.id] = TemplateVerdict(
                    tpl.name, tpl.site, "no cache", f"no ready cache of the inputs at {tpl.site}"
                )
            elif policy == "order" and at_warm and chosen.site not in (warm_sites or ()):
                verdicts[tpl.id] = TemplateVerdict(
                    tpl.name,
                    tpl.site,
                    "policy",
                    "has a ready cache of the inputs, but the queue's policy is order",
                )
            else:
                verdicts[tpl.id] = TemplateVerdict(
                    tpl.name, tpl.site, "lower in order", f"after {chosen.name} in the queue"
                )
    return chosen, tuple(verdicts[t.id] for t in templates)
