"""Print the README's table of every setting, generated from the settings code.

    python deploy/settings_table.py        # Markdown, between the README's markers

Rows come from the fields of :class:`lakecache.settings.Settings` (the ``[lakecache]``
table of a config file, and ``LAKECACHE_*`` variables) and of
:class:`lakecache.server.config.ServerConfig` (the ``[server]`` table of
``lakecache server --config``); each meaning is the ``#:`` comment above the field in
the source, so the table cannot drift from the code. tests/deploy checks that the
README holds exactly this output, that every key it names is one the loaders take,
and that every field has a meaning.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import MISSING, fields
from datetime import timedelta
from typing import Any

from lakecache import settings as settings_module
from lakecache.server import config as config_module
from lakecache.server.config import ServerConfig
from lakecache.settings import Settings

START = "<!-- settings-table -->"
END = "<!-- /settings-table -->"

#: Meanings of the fields whose source has no ``#:`` comment (their names say most of it).
EXTRA_MEANINGS = {
    "home": "Local state: the embedded default's lake and catalog, the stat cache, logins.",
    "s3_endpoint": "The S3 API's URL (empty: AWS for the region).",
    "s3_region": "The bucket's region.",
    "s3_access_key": "S3 access key (else the usual `AWS_*` variables and profiles).",
    "s3_secret_key": "S3 secret key.",
    "s3_profile": "An AWS profile to take the S3 credentials from.",
    "lake_timeout": "Seconds one lake request may take.",
    "host": "Address the server listens on (`0.0.0.0` in a container).",
    "port": "Port the server listens on (0: a free one).",
    "session_ttl": "Hours a dashboard login lasts.",
    "login_window": "The window of the two per-login limits above.",
    "default_page_size": "Items per page of a list when the client asks for no size.",
    "max_page_size": "The most items per page a client may ask for.",
    "admin_name": "Name of the org admin created on the first start.",
}

#: ``[server]`` keys that are not the field's own name (``load_config`` converts them).
SERVER_KEYS = {"session_ttl": "session_hours"}
#: ServerConfig fields set from the environment only (secrets never sit in a file).
SERVER_ENV = {
    "admin_password": "LAKECACHE_ADMIN_PASSWORD",
    "metrics_token": "LAKECACHE_METRICS_TOKEN",
}
#: ServerConfig fields described elsewhere than in this table.
SERVER_SKIP = {"sites"}


def field_meanings(cls: type) -> dict[str, str]:
    """Field name -> the ``#:`` comment lines just above it in ``cls``'s source."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    tree = ast.parse(source)
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    found: dict[str, str] = {}
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment: list[str] = []
        row = node.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        if comment:
            found[node.target.id] = " ".join(comment)
    return found


def _meaning(name: str, documented: dict[str, str]) -> str:
    text = documented.get(name) or EXTRA_MEANINGS.get(name, "")
    # Sphinx roles read badly in a README table.
    for role in (":attr:", ":meth:", ":class:", ":mod:", ":func:"):
        text = text.replace(role, "")
    return text.replace("``", "`").replace("|", "\\|")


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _default(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, timedelta):
        return f"`{_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 1024 * 1024 and value % (1024 * 1024) == 0:
        return f"`{value}` ({value // (1024 * 1024)} MiB)"
    return f"`{value}`"


def _field_default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def rows() -> list[tuple[str, str, str, str]]:
    """(config key, environment variable, default, meaning), in the order of the table."""
    env_of = {key: name for name, key in settings_module._ENV.items()}
    computed = {
        "home": "`~/.lakecache`",
        "lake_url": "`$LAKECACHE_HOME/lake`",
        "catalog_url": "SQLite in `$LAKECACHE_HOME`",
        "author": "`user@host`",
    }
    documented = field_meanings(Settings)
    table = []
    for f in fields(Settings):
        key = "—" if f.name == "home" else f"`[lakecache] {f.name}`"
        env = "LAKECACHE_HOME" if f.name == "home" else env_of.get(f.name, "")
        default = computed.get(f.name) or _default(_field_default(f))
        table.append((key, f"`{env}`" if env else "—", default, _meaning(f.name, documented)))
    documented = field_meanings(ServerConfig)
    for f in fields(ServerConfig):
        if f.name in SERVER_SKIP:
            continue
        default = _field_default(f)
        if f.name in SERVER_ENV:
            key, env = "—", f"`{SERVER_ENV[f.name]}`"
        else:
            key, env = f"`[server] {SERVER_KEYS.get(f.name, f.name)}`", "—"
        if f.name == "session_ttl":
            default = f"`{int(default.total_seconds() // 3600)}`"
        else:
            default = _default(default)
        table.append((key, env, default, _meaning(f.name, documented)))
    return table


def markdown() -> str:
    """The table as Markdown, without the markers."""
    out = [
        "| config file key | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    out += [f"| {key} | {env} | {default} | {meaning} |" for key, env, default, meaning in rows()]
    return "\n".join(out) + "\n"


def server_keys() -> list[str]:
    """Every ``[server]`` key the table names (tests load each through ``load_config``)."""
    return [
        SERVER_KEYS.get(f.name, f.name)
        for f in fields(ServerConfig)
        if f.name not in SERVER_SKIP and f.name not in SERVER_ENV
    ]


# The loaders this table documents; named so that a rename breaks here, loudly.
__all__ = ["END", "START", "markdown", "rows", "server_keys"]
_LOADERS = (settings_module.Settings.load, config_module.load_config)

if __name__ == "__main__":
    print(START)
    print(markdown(), end="")
    print(END)
