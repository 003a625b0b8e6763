"""The control plane: a FastAPI server with accounts, per-dataset roles and the REST API.

``lakecache server`` runs it; tests and embedders call :func:`create_app`.
Importing this package loads FastAPI, so only the server command and its
tests import it.
"""

from lakecache.server.app import create_app
from lakecache.server.config import ServerConfig, load_config
from lakecache.server.runtime import ControlPlane

__all__ = ["ControlPlane", "ServerConfig", "create_app", "load_config"]
