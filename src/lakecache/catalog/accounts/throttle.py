"""Failed password logins, and the limits that slow down guessing.

Attempts are recorded by the name as typed (it may name no user), so a limit
reached says nothing about which users exist. Three limits, each over a
sliding window (:class:`LoginLimit`):

* per name *and* address: one guesser at one account;
* per address, any names: one guesser trying many accounts;
* per name, any addresses: many guessers (a botnet) at one account. This one
  locks the account's password logins, so it is bounded: attempts refused
  while a limit holds are not recorded, so the lock lifts at most one window
  after the failures that caused it, however long an attacker keeps trying,
  and a user's API tokens and open sessions keep working meanwhile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, select

from lakecache.catalog import accounts_tables as at
from lakecache.catalog.accounts.base import AccountsBase

LimitScope = Literal["name at address", "address", "name"]


@dataclass(frozen=True)
class LoginLimit:
    """At most ``failures`` failed logins within ``window``, counted per ``scope``."""

    scope: LimitScope
    failures: int
    window: timedelta


@dataclass(frozen=True)
class LoginRefusal:
    """A limit that holds now, and how long until a login may be tried again."""

    limit: LoginLimit
    retry_after: int


class LoginAttempts(AccountsBase):
    """Recording failed logins and counting them against :class:`LoginLimit` s."""

    def record_login(self, user_name: str, ip: str, *, ok: bool, now: datetime) -> None:
        """Note one login attempt; a success clears the failures of that name from that address."""
        with self._c._write() as conn:
            if ok:
                conn.execute(
                    delete(at.login_attempts).where(
                        at.login_attempts.c.user_name == user_name[:255],
                        at.login_attempts.c.ip == ip[:64],
                    )
                )
            else:
                conn.execute(
                    at.login_attempts.insert().values(
                        user_name=user_name[:255], ip=ip[:64], ok=False, at=now
                    )
                )

    def recent_failures(
        self, *, since: datetime, ip: str | None = None, user_name: str | None = None
    ) -> int:
        """Failed logins since ``since``: from ``ip``, for ``user_name``, or both (None: any)."""
        with self._c._read() as conn:
            return int(conn.scalar(_failures(func.count(), since, ip, user_name)) or 0)

    def oldest_failure(
        self, *, since: datetime, ip: str | None = None, user_name: str | None = None
    ) -> datetime | None:
        """When the oldest failure :meth:`recent_failures` counts happened; None if none."""
        q = _failures(func.min(at.login_attempts.c.at), since, ip, user_name)
        with self._c._read() as conn:
            value: datetime | None = conn.scalar(q)
        return value

    def login_refusal(
        self, user_name: str, ip: str, limits: tuple[LoginLimit, ...], *, now: datetime
    ) -> LoginRefusal | None:
        """The first of ``limits`` that a login for ``user_name`` from ``ip`` would break now.

        ``retry_after`` counts until the oldest failure in that limit's window
        leaves it (at least 1 s, at most the window).
        """
        for limit in limits:
            since = now - limit.window
            ip_filter = None if limit.scope == "name" else ip
            name_filter = None if limit.scope == "address" else user_name
            failures = self.recent_failures(since=since, ip=ip_filter, user_name=name_filter)
            if failures < limit.failures:
                continue
            oldest = self.oldest_failure(since=since, ip=ip_filter, user_name=name_filter) or now
            wait = math.ceil((oldest + limit.window - now).total_seconds())
            return LoginRefusal(limit, min(max(1, wait), math.ceil(limit.window.total_seconds())))
        return None


def _failures(column: Any, since: datetime, ip: str | None, user_name: str | None) -> Any:
    q = select(column).where(at.login_attempts.c.ok.is_(False), at.login_attempts.c.at >= since)
    if ip is not None:
        q = q.where(at.login_attempts.c.ip == ip[:64])
    if user_name is not None:
        q = q.where(at.login_attempts.c.user_name == user_name[:255])
    return q
