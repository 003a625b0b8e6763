"""What the API says of a listed file beyond the manifest: its media type.

Folder pages themselves are :meth:`lakecache.data.index.ManifestIndex.ls_page`.
"""

from __future__ import annotations

import mimetypes


def content_type(name: str) -> str | None:
    """The media type a file name suggests (image/png, image/jpeg, ...), or None."""
    return mimetypes.guess_type(name, strict=False)[0]
