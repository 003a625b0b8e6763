"""Path parameters that several routers and the dashboard share, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

#: A dataset's name in a URL. Its rule (lowercase, digits, '.', '_', '-') is checked by
#: the catalog, which answers the same 404 for a name that breaks it as for a hidden one.
DatasetName = Annotated[str, Path(min_length=1, max_length=64)]
