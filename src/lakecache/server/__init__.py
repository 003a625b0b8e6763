"""The control plane: a FastAPI server with accounts, per-dataset roles and the REST API.

``lakecache server`` runs it; tests and embedders call :func:`create_app`.
Importing these names loads FastAPI, so only the server command and its tests
import them; they load on first use, so a light submodule (``lakecache.server.logs``,
which a site agent uses) costs no FastAPI import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lakecache.server.app import create_app
    from lakecache.server.config import ServerConfig, load_config
    from lakecache.server.runtime import ControlPlane

__all__ = ["ControlPlane", "ServerConfig", "create_app", "load_config"]

_WHERE = {
    "create_app": "lakecache.server.app",
    "ServerConfig": "lakecache.server.config",
    "load_config": "lakecache.server.config",
    "ControlPlane": "lakecache.server.runtime",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'lakecache.server' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value
