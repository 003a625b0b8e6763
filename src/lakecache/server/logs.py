"""The server's logging: one line per event, and no library that logs credentials.

botocore at DEBUG logs request headers, and the S3 ``Authorization`` header
names the access key id; those libraries stay at WARNING whatever the level.
lakecache's own messages name the lake by URL and endpoint only.
"""

from __future__ import annotations

import logging

#: Loggers held at WARNING: their debug output carries request headers or SQL parameters,
#: and httpx logs every request at INFO (an idle agent polls its server several times a
#: second).
QUIET = (
    "botocore",
    "boto3",
    "urllib3",
    "s3transfer",
    "alembic",
    "sqlalchemy.engine",
    "httpx",
    "httpcore",
)


def configure(level: str = "info") -> None:
    """Log to stderr at ``level`` (debug, info, warning, error), with the quiet list held back."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_libraries()


def quiet_libraries() -> None:
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
