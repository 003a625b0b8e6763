"""Every list is paginated: ``?limit=N&cursor=...``, answered with a :class:`Page`.

Cursors are opaque to clients (URL-safe base64 of a small JSON object): an
offset for lists the server holds whole, or the last key for keyset listings
(folders of a commit), which stay fast on the millionth item.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel

from lakecache.server.errors import InvalidCursorError

T = TypeVar("T")
#: The largest page any list gives, whatever the server's config.
MAX_PAGE_SIZE = 1000


class Page(BaseModel, Generic[T]):
    """One page of a list. ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = None
    #: How many items the whole list has, where it is known without extra cost.
    total: int | None = None


@dataclass(frozen=True)
class PageRequest:
    limit: int
    cursor: str | None

    def offset(self) -> int:
        if self.cursor is None:
            return 0
        value = decode_cursor(self.cursor).get("o")
        if not isinstance(value, int) or value < 0:
            raise InvalidCursorError("the cursor is not one of this list's")
        return value


async def page_request(  # async: pure parsing, no worker thread needed
    request: Request,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="next_cursor of the previous page")
    ] = None,
) -> PageRequest:
    config = request.app.state.plane.config
    size = config.default_page_size if limit is None else min(limit, config.max_page_size)
    return PageRequest(size, cursor or None)


Paging = Annotated[PageRequest, Depends(page_request)]


def encode_cursor(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursorError(f"invalid cursor {cursor[:40]!r}") from None
    if not isinstance(data, dict):
        raise InvalidCursorError(f"invalid cursor {cursor[:40]!r}")
    return data


def paginate(items: Sequence[T], page: PageRequest) -> Page[T]:
    """A page of a list held in memory."""
    start = page.offset()
    chunk = list(items[start : start + page.limit])
    end = start + len(chunk)
    nxt = encode_cursor({"o": end}) if end < len(items) else None
    return Page[T](items=chunk, next_cursor=nxt, total=len(items))


def paginate_iter(items: Iterable[T], page: PageRequest) -> tuple[list[T], str | None]:
    """A page of a stream: skips to the offset and reads one item past the page, no more."""
    start = page.offset()
    it = itertools.islice(items, start, start + page.limit + 1)
    chunk = list(it)
    more = len(chunk) > page.limit
    return chunk[: page.limit], encode_cursor({"o": start + page.limit}) if more else None
