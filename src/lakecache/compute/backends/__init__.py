"""Backends that run a job's command: one small protocol, one module each.

Each backend is named by a dotted path, so the core never imports a backend it
does not use (and a missing engine says how to install it). Every backend opts
into the shared contract suite in ``tests/compute/backend_contract.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

from lakecache.compute.backends.base import Backend, BackendError, Exit, LaunchSpec

#: Backend name -> "module:class".
REGISTRY = {
    "local": "lakecache.compute.backends.local:LocalBackend",
    "container": "lakecache.compute.backends.container:ContainerBackend",
    "ray": "lakecache.compute.backends.ray:RayBackend",
    "kubernetes": "lakecache.compute.backends.kubernetes:KubernetesBackend",
}

__all__ = ["REGISTRY", "Backend", "BackendError", "Exit", "LaunchSpec", "open_backend"]


def open_backend(name: str, config: dict[str, Any] | None = None) -> Backend:
    """The backend called ``name``, built from its compute resource's settings.

    Raises BackendError for a backend this lakecache cannot run (yet).
    """
    target = REGISTRY.get(name)
    if target is None:
        raise BackendError(
            f"no job runner for backend {name!r} in this lakecache",
            hint=f"Runners exist for: {', '.join(sorted(REGISTRY))}.",
        )
    module, _, cls = target.partition(":")
    try:
        engine = importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"the {name} backend cannot be loaded here: {exc}",
            hint=f"Install its extra on the agent's machine: pip install 'lakecache[{name}]'.",
        ) from exc
    try:
        backend: Backend = getattr(engine, cls)(**(config or {}))
    except TypeError as exc:
        # An unknown or misspelt key in the compute resource's config.
        raise BackendError(
            f"bad settings for the {name} backend: {exc}",
            hint="Fix the compute resource's config (lakecache compute add --config).",
        ) from exc
    return backend
