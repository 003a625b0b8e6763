"""The lake: immutable, content-addressed objects in an object store.

Backends are registered by URL scheme with a dotted import path, so the core
never imports a backend it does not use (botocore loads only for ``s3://``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lakecache.errors import UserError
from lakecache.lake.base import Lake, ObjectInfo

if TYPE_CHECKING:
    from lakecache.settings import Settings

__all__ = ["Lake", "ObjectInfo", "open_lake"]

_BACKENDS = {
    "file": ("lakecache.lake.local:LocalLake", None),
    "s3": ("lakecache.lake.s3:S3Lake", "botocore"),
}


def open_lake(settings: Settings) -> Lake:
    """Open the lake named by ``settings.lake_url``."""
    url = settings.lake_url
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    try:
        target, extra = _BACKENDS[scheme]
    except KeyError:
        raise UserError(
            f"unknown lake URL scheme {scheme!r} in {url!r}",
            hint="Use a local folder path or s3://bucket/prefix.",
        ) from None
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - depends on install
        raise UserError(
            f"the {scheme} lake needs {extra}: {exc}", hint=f"pip install {extra}"
        ) from exc
    cls = getattr(module, cls_name)
    if scheme == "file":
        return cls(url[len("file://") :] if url.startswith("file://") else url)  # type: ignore[no-any-return]
    return cls.from_settings(settings)  # type: ignore[no-any-return]
