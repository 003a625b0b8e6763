"""Accounts in the catalog: users, API tokens, dashboard sessions, login limits, members.

Reached as ``Accounts(catalog)``, one class made of one part per concept:

=====================  ==========================================================
:mod:`.users`          users, passwords, org admins (never the last one removed)
:mod:`.tokens`         API tokens ``lct_<prefix>_<secret>``
:mod:`.sessions`       dashboard sessions and their CSRF tokens
:mod:`.throttle`       failed logins, and the limits that slow guessing down
:mod:`.members`        roles on datasets (never a dataset without an admin)
:mod:`.datasets`       creating a dataset with its admin; deleting one whole
=====================  ==========================================================

Every method that depends on time takes ``now`` from the caller, so tests
drive a clock of their own.

Secrets, and how each is kept:

* passwords: argon2id (argon2-cffi's RFC 9106 profile), a slow hash, since
  people choose guessable passwords;
* API tokens and session cookies: 256 random bits, stored as SHA-256. A slow
  hash adds nothing against that much entropy and would cost every request;
* nothing secret is ever returned except once, at creation.
"""

from __future__ import annotations

from lakecache.catalog.accounts.base import TOUCH_EVERY, UserRecord
from lakecache.catalog.accounts.datasets import OwnedDatasets
from lakecache.catalog.accounts.members import (
    ROLE_RANK,
    ROLES,
    Membership,
    Memberships,
    check_role,
)
from lakecache.catalog.accounts.sessions import SessionRecord, Sessions
from lakecache.catalog.accounts.throttle import (
    LoginAttempts,
    LoginLimit,
    LoginRefusal,
)
from lakecache.catalog.accounts.tokens import TOKEN_PREFIX, TokenRecord, Tokens
from lakecache.catalog.accounts.users import MIN_PASSWORD, Users, check_user_name

__all__ = [
    "MIN_PASSWORD",
    "ROLES",
    "ROLE_RANK",
    "TOKEN_PREFIX",
    "TOUCH_EVERY",
    "Accounts",
    "LoginLimit",
    "LoginRefusal",
    "Membership",
    "SessionRecord",
    "TokenRecord",
    "UserRecord",
    "check_role",
    "check_user_name",
]


class Accounts(Users, Tokens, Sessions, LoginAttempts, Memberships, OwnedDatasets):
    """Users, tokens, sessions, login limits and memberships. Thread-safe; one per process."""
