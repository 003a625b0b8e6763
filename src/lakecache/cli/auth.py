"""``lakecache login | logout | user | token | member``: accounts on a lakecache server.

``lakecache login URL`` trades a name and password for an API token and keeps
it in ``$LAKECACHE_HOME/credentials.json`` (mode 0600, written atomically; the
file is :mod:`lakecache.client.login`'s); the other commands talk to that
server with it (``--server URL`` picks another one logged in before).
"""

from __future__ import annotations

import getpass
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from lakecache.cli.common import json_option
from lakecache.cli.output import human_age, print_json, print_table
from lakecache.client.login import (
    API_PREFIX,
    chosen_server,
    forget_login,
    normalize_url,
    save_login,
    saved_logins,
)
from lakecache.errors import LakecacheError, UserError

API = API_PREFIX
#: What to do instead of writing a user or password in a server URL.
_USE_USER = "Use --user; the password is asked."

server_option = click.option(
    "--server",
    "server_url",
    default=None,
    metavar="URL",
    help="The server (default: the one you logged in to last).",
)
password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)


class RemoteError(LakecacheError):
    """The server answered with an error; message and hint are the server's."""

    def __init__(self, message: str, *, status: int, code: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


# -- the login file ------------------------------------------------------------------------


def _home() -> Path:
    from lakecache.settings import Settings

    return Settings.load().home


# -- talking to the server -----------------------------------------------------------------


class Api:
    """A small client for the server's REST API; errors become :class:`RemoteError`."""

    def __init__(self, url: str, token: str | None = None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self._client = httpx.Client(base_url=url + API, headers=headers, timeout=60.0)

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            r = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LakecacheError(
                f"cannot reach the lakecache server at {self.url}: {exc}",
                hint="Check the URL and that `lakecache server` runs there.",
            ) from None
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                message, code, hint = err["message"], err["code"], err.get("hint") or None
            except (ValueError, KeyError, TypeError):
                message, code, hint = f"HTTP {r.status_code} from {self.url}", "http_error", None
            raise RemoteError(message, status=r.status_code, code=code, hint=hint)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def all(self, path: str, **params: Any) -> list[Any]:
        """Every item of a paginated list."""
        items: list[Any] = []
        cursor = None
        while True:
            page = self.call(
                "GET",
                path,
                params={**params, "limit": 1000, **({"cursor": cursor} if cursor else {})},
            )
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items


def connect(server_url: str | None) -> Api:
    """A client for ``server_url`` (or the default server), with the stored token."""
    logins = saved_logins(_home())
    url = chosen_server(logins, server_url, userinfo_hint=_USE_USER)
    if not url:
        raise UserError("not logged in to any lakecache server", hint="Run `lakecache login URL`.")
    entry = logins["servers"].get(url)
    if not entry:
        raise UserError(f"not logged in to {url}", hint=f"Run `lakecache login {url}`.")
    api = Api(url, entry["token"])
    click.get_current_context().call_on_close(api.close)
    return api


def _read_password(stdin: bool, prompt: str = "Password", confirm: bool = False) -> str:
    # Without a terminal nothing can be typed hidden: read the piped line instead of
    # letting getpass warn that the password may be echoed.
    if stdin or not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UserError("no password on stdin")
        return line
    value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value


# -- login / logout ------------------------------------------------------------------------


@click.command("login")
@click.argument("url")
@click.option("--user", "-u", "name", default=None, help="Your user name (asked if not given).")
@password_stdin
@click.option("--token-name", default=None, help="Name of the token (default cli@HOSTNAME).")
@click.option(
    "--expires",
    "expires_days",
    type=click.IntRange(1, 3650),
    default=90,
    show_default=True,
    help="Days until the token expires.",
)
def login(
    url: str, name: str | None, password_stdin: bool, token_name: str | None, expires_days: int
) -> None:
    """Log in to the lakecache server at URL and keep an API token for it (file mode 0600).

    URL is the server's address (http://HOST:PORT), with or without /api/v1.
    Without a terminal (a script, CI), pass --user and pipe the password in:
    `echo "$PASS" | lakecache login URL --user NAME --password-stdin`.
    """
    url = normalize_url(url, userinfo_hint=_USE_USER)
    if name is None:
        if not sys.stdin.isatty():
            raise UserError(
                "no terminal to ask your user name on",
                hint="Pass --user NAME, and the password on stdin (--password-stdin).",
            )
        name = click.prompt("User", default=getpass.getuser())
    password = _read_password(password_stdin)
    api = Api(url)
    try:
        created = api.call(
            "POST",
            "/auth/token",
            json={
                "name": name,
                "password": password,
                "token_name": token_name or f"cli@{socket.gethostname()}"[:128],
                "expires_in_days": expires_days,
            },
        )
    finally:
        api.close()
    path = save_login(
        _home(),
        url,
        {
            "user": name,
            "token": created["token"],
            "token_id": created["id"],
            "expires_at": created["expires_at"],
        },
    )
    click.echo(
        f"logged in to {url} as {name}; token saved in {path} "
        f"(expires {created['expires_at'][:10]})"
    )


@click.command("logout")
@server_option
def logout(server_url: str | None) -> None:
    """Revoke this machine's token for the server and forget it."""
    home = _home()
    logins = saved_logins(home)
    url = chosen_server(logins, server_url, userinfo_hint=_USE_USER)
    entry = logins["servers"].get(url) if url else None
    if not url or not entry:
        raise UserError("not logged in", hint="Nothing to do.")
    api = Api(url, entry["token"])
    try:
        api.call("DELETE", f"/tokens/{int(entry['token_id'])}")
    except RemoteError as exc:
        if exc.status not in (401, 404):  # already revoked or expired: forget it anyway
            raise
    finally:
        api.close()
    forget_login(home, url)
    click.echo(f"logged out of {url}")


@click.command("whoami")
@server_option
@json_option
def whoami(server_url: str | None, as_json: bool) -> None:
    """Say how this machine works: on the lake directly, or through which server as whom.

    Through a server it also sums up your roles: org admin, the site an agent
    account works for, and how many datasets you administer, write and read.
    """
    from lakecache.settings import Settings
    from lakecache.urls import without_userinfo

    settings = Settings.load()
    logins = saved_logins(settings.home)
    url = chosen_server(logins, server_url or settings.server_url, userinfo_hint=_USE_USER)
    if not url:
        info: dict[str, Any] = {
            "mode": "local",
            "author": settings.author,
            "lake": without_userinfo(settings.lake_url),
            "catalog": without_userinfo(settings.catalog_url),
        }
        if as_json:
            print_json(info)
            return
        click.echo(
            f"local: working on the lake directly as {info['author']}\n"
            f"  lake     {info['lake']}\n  catalog  {info['catalog']}\n"
            "(log in to a team's server with `lakecache login URL`)"
        )
        return
    api = connect(url)
    me = api.call("GET", "/auth/session")["user"]
    roles: dict[str, int] = {"admin": 0, "writer": 0, "reader": 0}
    for d in api.all("/datasets"):
        roles[d["role"]] = roles.get(d["role"], 0) + 1
    info = {
        "mode": "server",
        "server": url,
        "user": me["name"],
        "org_admin": me["org_admin"],
        "agent_site": me.get("agent_site"),
        "datasets": roles,
    }
    if as_json:
        print_json(info)
        return
    kind = "org admin" if me["org_admin"] else "user"
    if me.get("agent_site"):
        kind = f"agent account for site {me['agent_site']}"
    click.echo(
        f"logged in to {url} as {me['name']} ({kind}); datasets: "
        f"admin of {roles['admin']}, writer of {roles['writer']}, reader of {roles['reader']}"
    )


# -- users ---------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Users of the server (adding, disabling: org admins)."""


@user.command("add")
@click.argument("name")
@click.option("--org-admin", is_flag=True, help="May manage users, sites and every dataset.")
@click.option(
    "--agent-site",
    metavar="SITE",
    default=None,
    help="A user for SITE's agent: it works that site's caches only (log in as it there).",
)
@password_stdin
@click.option("--generate", is_flag=True, help="Let the server choose a password (printed once).")
@server_option
def user_add(
    name: str,
    org_admin: bool,
    agent_site: str | None,
    password_stdin: bool,
    generate: bool,
    server_url: str | None,
) -> None:
    """Add the user NAME (asks for a password unless --generate or --password-stdin)."""
    api = connect(server_url)
    password = None if generate else _read_password(password_stdin, "Password for " + name, True)
    body = {"name": name, "password": password, "org_admin": org_admin, "agent_site": agent_site}
    out = api.call("POST", "/users", json=body)
    role = " (org admin)" if org_admin else f" (agent of site {agent_site})" if agent_site else ""
    click.echo(f"added user {name}{role}")
    if out.get("password"):
        click.echo(f"password: {out['password']}  (shown only now)")


@user.command("ls")
@json_option
@server_option
def user_ls(as_json: bool, server_url: str | None) -> None:
    """List users (org admins)."""
    users = connect(server_url).all("/users")
    if as_json:
        print_json(users)
        return
    print_table(
        ["user", "org admin", "agent of", "disabled", "created"],
        [
            (
                u["name"],
                "yes" if u["org_admin"] else "",
                u.get("agent_site") or "",
                "yes" if u["disabled"] else "",
                human_age(u["created_at"]),
            )
            for u in users
        ],
    )


@user.command("passwd")
@click.argument("name")
@password_stdin
@server_option
def user_passwd(name: str, password_stdin: bool, server_url: str | None) -> None:
    """Set NAME's password (yours, given the current one; anyone's for org admins)."""
    api = connect(server_url)
    me = api.call("GET", "/auth/session")["user"]
    body: dict[str, Any] = {}
    if me["name"] == name and not me["org_admin"]:
        body["current_password"] = _read_password(password_stdin, "Current password")
    body["password"] = _read_password(password_stdin, "New password", not password_stdin)
    api.call("PATCH", f"/users/{quote(name, safe='')}", json=body)
    click.echo(f"password of {name} changed; their dashboard sessions were ended")


@user.command("disable")
@click.argument("name")
@server_option
def user_disable(name: str, server_url: str | None) -> None:
    """Disable NAME: their tokens and sessions stop working at once (org admins)."""
    connect(server_url).call("PATCH", f"/users/{quote(name, safe='')}", json={"disabled": True})
    click.echo(f"disabled {name}")


@user.command("enable")
@click.argument("name")
@server_option
def user_enable(name: str, server_url: str | None) -> None:
    """Enable NAME again (org admins)."""
    connect(server_url).call("PATCH", f"/users/{quote(name, safe='')}", json={"disabled": False})
    click.echo(f"enabled {name}")


# -- tokens --------------------------------------------------------------------------------


@click.group()
def token() -> None:
    """Your API tokens for scripts and CI (each shown once when created)."""


@token.command("create")
@click.option("--name", "-n", default="api", show_default=True, help="What the token is for.")
@click.option(
    "--expires",
    "expires_days",
    type=click.IntRange(1, 3650),
    default=90,
    show_default=True,
    help="Days until it expires.",
)
@click.option("--no-expiry", is_flag=True, help="A token that never expires (revoke it by hand).")
@json_option
@server_option
def token_create(
    name: str, expires_days: int, no_expiry: bool, as_json: bool, server_url: str | None
) -> None:
    """Create a token; print it once (the server keeps only its hash)."""
    out = connect(server_url).call(
        "POST",
        "/tokens",
        json={"name": name, "expires_in_days": None if no_expiry else expires_days},
    )
    if as_json:
        print_json(out)
        return
    click.echo(out["token"])
    expiry = out["expires_at"][:10] if out["expires_at"] else "never"
    click.echo(f"token {out['id']} ({name}), expires {expiry}; shown only now", err=True)


@token.command("ls")
@json_option
@server_option
def token_ls(as_json: bool, server_url: str | None) -> None:
    """List your tokens (never their secrets)."""
    tokens = connect(server_url).all("/tokens")
    if as_json:
        print_json(tokens)
        return
    print_table(
        ["id", "name", "prefix", "state", "expires", "last used"],
        [
            (
                t["id"],
                t["name"],
                t["prefix"],
                "active" if t["active"] else ("revoked" if t["revoked_at"] else "expired"),
                (t["expires_at"] or "never")[:10],
                human_age(t["last_used_at"]),
            )
            for t in tokens
        ],
        right=["id"],
    )


@token.command("revoke")
@click.argument("token_id", type=int)
@server_option
def token_revoke(token_id: int, server_url: str | None) -> None:
    """Revoke the token TOKEN_ID (see `lakecache token ls`): refused from now on."""
    connect(server_url).call("DELETE", f"/tokens/{token_id}")
    click.echo(f"revoked token {token_id}")


# -- members -------------------------------------------------------------------------------


@click.group()
def member() -> None:
    """Who may read, write or administer a dataset."""


def _member_path(dataset: str, name: str | None = None) -> str:
    path = f"/datasets/{quote(dataset, safe='')}/members"
    return path if name is None else f"{path}/{quote(name, safe='')}"


@member.command("add")
@click.argument("dataset")
@click.argument("name", metavar="USER")
@click.option(
    "--role",
    "-r",
    type=click.Choice(["reader", "writer", "admin"]),
    default="reader",
    show_default=True,
    help="reader: read; writer: also commit, tag, cache; admin: also members, delete.",
)
@server_option
def member_add(dataset: str, name: str, role: str, server_url: str | None) -> None:
    """Give USER a role on DATASET (or change it). Dataset admins only."""
    out = connect(server_url).call("PUT", _member_path(dataset, name), json={"role": role})
    click.echo(f"{out['user']} is {out['role']} of {dataset}")


@member.command("rm")
@click.argument("dataset")
@click.argument("name", metavar="USER")
@server_option
def member_rm(dataset: str, name: str, server_url: str | None) -> None:
    """Take USER off DATASET. Dataset admins only."""
    connect(server_url).call("DELETE", _member_path(dataset, name))
    click.echo(f"removed {name} from {dataset}")


@member.command("ls")
@click.argument("dataset")
@json_option
@server_option
def member_ls(dataset: str, as_json: bool, server_url: str | None) -> None:
    """List the members of DATASET and their roles."""
    members = connect(server_url).all(_member_path(dataset))
    if as_json:
        print_json(members)
        return
    print_table(
        ["user", "role", "since"],
        [(m["user"], m["role"], human_age(m["created_at"])) for m in members],
    )
