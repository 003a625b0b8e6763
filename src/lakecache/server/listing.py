"""What the API says of a listed file beyond the manifest: its media type.

Folder pages themselves are :meth:`lakecache.data.index.ManifestIndex.ls_page`.
"""

from __future__ import annotations

import mimetypes
import posixpath
from functools import lru_cache


def content_type(name: str) -> str | None:
    """The media type a file name suggests (image/png, image/jpeg, ...), or None.

    The same answer as :func:`mimetypes.guess_type`, looked up once per extension: a
    page of a folder asks for hundreds of names that share a handful of extensions.
    """
    ext = posixpath.splitext(name)[1]
    if name.startswith("data:") or ext.lower() in mimetypes.suffix_map:
        return mimetypes.guess_type(name, strict=False)[0]  # data URLs, .tgz and the like
    if ext in mimetypes.encodings_map:
        return mimetypes.guess_type(name, strict=False)[0]  # .tar.gz: the type is inside
    return _type_of_extension(ext)


@lru_cache(maxsize=1024)
def _type_of_extension(ext: str) -> str | None:
    return mimetypes.guess_type(f"x{ext}", strict=False)[0] if ext else None
