"""Run tracking: experiments, runs, params, metrics, system metrics, artifacts and logs.

The SDK is :func:`start` and :func:`current`, which hand out a :class:`Run`;
storage is :class:`lakecache.tracking.store.TrackingStore` (the catalog) and
:mod:`lakecache.tracking.objects` (artifacts and logs in the lake).
"""

from lakecache.tracking.sdk import Run, current, start

__all__ = ["Run", "current", "start"]
