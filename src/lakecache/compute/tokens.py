"""Job-scoped tokens: ``lcj_<prefix>_<secret>``, what a running job authenticates with.

When an attempt starts through a server, the server mints one and the runner
hands it to the job as ``LAKECACHE_TOKEN`` (never the agent's own token). It
lets the job read its input datasets and nothing else, as its submitter (so
never more than the submitter may read). Stored as a SHA-256 like API tokens
(256 random bits need no slow hash), and it authenticates only while the
attempt it was minted for is the job's running one: it expires the moment the
job ends, is cancelled or is requeued, with nothing to revoke. ``expires_at``
bounds it besides, should a job's row never leave ``running``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from lakecache.compute import tables as ct

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog

JOB_TOKEN_PREFIX = "lcj"
#: The longest a job token lives even if its job never ends.
JOB_TOKEN_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class JobGrant:
    """What a job token allows: reads of ``datasets``, as ``submitted_by``, for one attempt."""

    job_id: int
    attempt: int
    submitted_by: str
    datasets: frozenset[str]


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def is_job_token(token: str) -> bool:
    """True if ``token`` has the shape of a job token (it may still be unknown)."""
    return token.startswith(JOB_TOKEN_PREFIX + "_")


class JobTokens:
    """Minting and checking job tokens. Safe to share between threads."""

    def __init__(self, catalog: Catalog) -> None:
        self._c = catalog

    def mint(self, job_id: int, attempt: int, *, now: datetime) -> str:
        """A new token for attempt ``attempt`` of job ``job_id``: the secret, shown once."""
        prefix = secrets.token_hex(6)
        secret = f"{JOB_TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        with self._c._write() as conn:
            conn.execute(
                ct.compute_job_tokens.insert().values(
                    job_id=job_id,
                    attempt=attempt,
                    prefix=prefix,
                    token_hash=_sha256(secret),
                    created_at=now,
                    expires_at=now + JOB_TOKEN_LIFETIME,
                )
            )
        return secret

    def authenticate(self, token: str, now: datetime) -> JobGrant | None:
        """The grant of a live job token: its attempt still running, not past its expiry.

        None for anything else (unknown, tampered, ended job, requeued attempt).
        """
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != JOB_TOKEN_PREFIX or not parts[1]:
            return None
        jt, j = ct.compute_job_tokens, ct.compute_jobs
        q = (
            select(
                jt.c.token_hash,
                jt.c.attempt,
                jt.c.expires_at,
                j.c.id,
                j.c.state,
                j.c.attempt.label("running_attempt"),
                j.c.submitted_by,
                j.c.inputs,
            )
            .join(j, j.c.id == jt.c.job_id)
            .where(jt.c.prefix == parts[1])
        )
        with self._c._read() as conn:
            row = conn.execute(q).one_or_none()
        if row is None or not hmac.compare_digest(row.token_hash, _sha256(token)):
            return None
        if row.expires_at <= now or row.state != "running":
            return None
        if int(row.running_attempt) != int(row.attempt):
            return None  # requeued: a newer attempt has a token of its own
        datasets = frozenset(str(d["dataset"]) for d in json.loads(row.inputs))
        return JobGrant(int(row.id), int(row.attempt), str(row.submitted_by), datasets)
