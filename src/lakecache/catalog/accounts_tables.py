"""Tables for users, API tokens, dashboard sessions, dataset memberships and login attempts.

Created by migration 0003. No secret is stored in the clear: passwords are
argon2 hashes, API tokens and session ids are SHA-256 hashes of high-entropy
random strings (a slow hash buys nothing against 256 bits of entropy, and a
fast one keeps every authenticated request cheap).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lakecache.catalog.tables import BigId, UTCDateTime, metadata

ROLES = ("reader", "writer", "admin")

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("org_admin", Boolean, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # An agent user: bound to this site's caches, nothing else (migration 0005).
    Column("agent_site", String(64), nullable=True),
    UniqueConstraint("name"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    # The public part of the token (``lct_<prefix>_<secret>``): found by index, then
    # the hash of the whole token is compared in constant time.
    Column("prefix", String(32), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    UniqueConstraint("prefix"),
    Index(None, "user_id"),
)

sessions = Table(
    "sessions",
    metadata,
    # SHA-256 of the cookie's value: a stolen database holds no usable session.
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # Sent back in the X-CSRF-Token header on unsafe requests; useless without the cookie.
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Index(None, "user_id"),
)

dataset_members = Table(
    "dataset_members",
    metadata,
    Column("dataset_id", BigId, ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("role IN ('reader', 'writer', 'admin')", name="role"),
    Index(None, "user_id"),
)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # The name as typed (it may name no user): rate limiting must not reveal which exist.
    Column("user_name", String(255), nullable=False),
    Column("ip", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "user_name", "ip", "at"),
    Index(None, "ip", "at"),
)
