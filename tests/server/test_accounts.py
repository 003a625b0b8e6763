"""Accounts in the catalog, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lakecache.catalog import Catalog
from lakecache.catalog.accounts import Accounts
from lakecache.catalog.topology import Topology
from lakecache.errors import (
    AccountDisabledError,
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    UserError,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PW = "password-123"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def accounts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Accounts]:
    url = (
        f"sqlite:///{tmp_path / 'catalog.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    catalog = Catalog.open(url)
    try:
        yield Accounts(catalog)
    finally:
        catalog.close()


def test_users_passwords_and_names(accounts: Accounts) -> None:
    admin = accounts.create_user("admin", PW, org_admin=True, now=NOW)
    assert admin.org_admin and accounts.count_users() == 1
    with pytest.raises(AlreadyExistsError):
        accounts.create_user("admin", PW, now=NOW)
    for bad in ("Admin", "a b", "", "x" * 65, "../x"):
        with pytest.raises(UserError):
            accounts.create_user(bad, PW, now=NOW)
    with pytest.raises(UserError, match="at least 8"):
        accounts.create_user("short", "1234567", now=NOW)
    assert accounts.check_password("admin", PW) == admin
    assert accounts.check_password("admin", PW + "x") is None
    assert accounts.check_password("nobody", PW) is None
    with pytest.raises(ConflictError, match="last org admin"):
        accounts.update_user("admin", disabled=True)
    accounts.create_user("bob", PW, now=NOW)
    accounts.update_user("bob", disabled=True)
    with pytest.raises(AccountDisabledError, match="disabled"):
        accounts.check_password("bob", PW)  # the right password: told it is disabled
    assert accounts.check_password("bob", "not-bobs-password") is None


def test_tokens_are_stored_hashed_and_die_when_revoked_or_expired(accounts: Accounts) -> None:
    accounts.create_user("ann", PW, now=NOW)
    rec, secret = accounts.create_token("ann", "ci", now=NOW, expires_at=NOW + timedelta(hours=1))
    assert accounts.authenticate_token(secret, NOW).name == "ann"  # type: ignore[union-attr]
    assert accounts.authenticate_token(secret, NOW + timedelta(hours=2)) is None
    assert (
        accounts.authenticate_token(secret[:-1] + ("B" if secret.endswith("A") else "A"), NOW)
        is None
    )
    from lakecache.catalog import accounts_tables as at

    with accounts._c._read() as conn:  # noqa: SLF001 - look at what is really stored
        stored = [tuple(r) for r in conn.execute(at.api_tokens.select()).all()]
    assert secret not in repr(stored) and secret.split("_", 2)[2] not in repr(stored)
    accounts.revoke_token(rec.id, now=NOW)
    assert accounts.authenticate_token(secret, NOW) is None
    assert not accounts.get_token(rec.id).active(NOW)
    with pytest.raises(UserError):
        accounts.create_token("ann", "old", now=NOW, expires_at=NOW - timedelta(seconds=1))


def test_sessions_expire_and_end(accounts: Accounts) -> None:
    accounts.create_user("ann", PW, now=NOW)
    cookie, s = accounts.create_session("ann", now=NOW, ttl=timedelta(hours=1))
    assert accounts.get_session(cookie, NOW).csrf_token == s.csrf_token  # type: ignore[union-attr]
    assert accounts.get_session(cookie, NOW + timedelta(hours=2)) is None
    accounts.delete_session(cookie)
    assert accounts.get_session(cookie, NOW) is None
    cookie, _ = accounts.create_session("ann", now=NOW, ttl=timedelta(hours=1))
    accounts.update_user("ann", password="another-pass-1")
    assert accounts.get_session(cookie, NOW) is None  # a new password ends the sessions


def test_memberships_keep_an_admin_and_dataset_delete_waits_for_caches(
    accounts: Accounts, tmp_path: Path
) -> None:
    for name in ("ann", "ben"):
        accounts.create_user(name, PW, now=NOW)
    accounts.create_owned_dataset("xray", "ann", "d", now=NOW)
    assert accounts.roles_of(accounts.get_user("ann").id) == {"xray": "admin"}
    accounts.set_member("xray", "ben", "reader", now=NOW)
    accounts.set_member("xray", "ben", "writer", now=NOW)
    assert accounts.role_of(accounts.get_user("ben").id, "xray") == "writer"
    with pytest.raises(ConflictError, match="last admin"):
        accounts.set_member("xray", "ann", "reader", now=NOW)
    with pytest.raises(ConflictError):
        accounts.remove_member("xray", "ann")
    with pytest.raises(UserError):
        accounts.set_member("xray", "ben", "owner", now=NOW)
    accounts.remove_member("xray", "ben")
    with pytest.raises(NotFoundError):
        accounts.remove_member("xray", "ben")
    assert [m.user for m in accounts.list_members("xray")] == ["ann"]
    with pytest.raises(AlreadyExistsError):
        accounts.create_owned_dataset("xray", "ben", now=NOW)

    catalog = accounts._c  # noqa: SLF001
    from lakecache.lake.objects import Commit

    commit = Commit("xray", "0" * 64, (), "ann", "m", NOW.isoformat(), 0, 0)
    cid = catalog.add_commit(commit, expected_head=None)
    topo = Topology(catalog)
    topo.add_site("s", "", NOW)
    topo.add_volume("v", "s", str(tmp_path / "v"), 10**9, 86400, NOW)
    rec, _ = topo.request_cache("xray", cid, "v", "", files=0, nbytes=0, now=NOW)
    with pytest.raises(ConflictError, match="cache"):
        accounts.delete_dataset("xray")
    topo.update_cache(rec.id, state="evicted")
    accounts.delete_dataset("xray")
    with pytest.raises(NotFoundError):
        catalog.get_dataset("xray")
    assert accounts.roles_of(accounts.get_user("ann").id) == {}


def test_login_attempts_are_counted_per_name_and_address(accounts: Accounts) -> None:
    since = NOW - timedelta(minutes=1)
    for _ in range(3):
        accounts.record_login("ann", "10.0.0.1", ok=False, now=NOW)
    accounts.record_login("bob", "10.0.0.1", ok=False, now=NOW)
    assert accounts.recent_failures(ip="10.0.0.1", since=since, user_name="ann") == 3
    assert accounts.recent_failures(ip="10.0.0.1", since=since) == 4
    assert accounts.recent_failures(ip="10.0.0.2", since=since, user_name="ann") == 0
    assert accounts.recent_failures(ip="10.0.0.1", since=NOW + timedelta(seconds=1)) == 0
    accounts.record_login("ann", "10.0.0.1", ok=True, now=NOW)
    assert accounts.recent_failures(ip="10.0.0.1", since=since, user_name="ann") == 0
    accounts.purge(now=NOW + timedelta(days=2))
    assert accounts.recent_failures(ip="10.0.0.1", since=NOW - timedelta(days=9)) == 0


def test_an_accounts_login_lock_counts_every_address_and_lifts_after_one_window(
    accounts: Accounts,
) -> None:
    from lakecache.catalog.accounts import LoginLimit

    window = timedelta(minutes=15)
    limits = (
        LoginLimit("name at address", 3, timedelta(minutes=1)),
        LoginLimit("address", 30, timedelta(minutes=1)),
        LoginLimit("name", 4, window),
    )
    for i in range(4):
        accounts.record_login("ann", f"10.0.0.{i}", ok=False, now=NOW + timedelta(minutes=i))
    later = NOW + timedelta(minutes=5)
    assert accounts.recent_failures(since=NOW, user_name="ann") == 4
    refusal = accounts.login_refusal("ann", "10.9.9.9", limits, now=later)
    assert refusal is not None and refusal.limit.scope == "name"
    assert refusal.retry_after == 10 * 60  # the oldest failure leaves the window then
    assert accounts.login_refusal("bob", "10.9.9.9", limits, now=later) is None
    # Once the oldest failure is a window old, one more try is allowed: never locked for good.
    after = NOW + window + timedelta(seconds=1)
    assert accounts.login_refusal("ann", "10.9.9.9", limits, now=after) is None
    # The per-address limits stay as they were.
    for _ in range(3):
        accounts.record_login("cid", "10.1.1.1", ok=False, now=NOW)
    held = accounts.login_refusal("cid", "10.1.1.1", limits, now=NOW)
    assert held is not None and held.limit.scope == "name at address"
    assert accounts.login_refusal("cid", "10.1.1.2", limits, now=NOW) is None
