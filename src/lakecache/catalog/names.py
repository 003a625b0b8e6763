"""Which names datasets, branches and tags may have, checked before anything is stored.

Names appear in URLs, paths on cache volumes and ``NAME@REF`` arguments, so
they stay short and free of separators. Branches and tags share one namespace
per dataset (the ``refs`` table), so a tag can never shadow a branch.
"""

from __future__ import annotations

import re

from lakecache.errors import UserError

_DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_REF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_FULL_ID = re.compile(r"[0-9a-f]{64}")

#: The branch every dataset commits to unless told otherwise.
MAIN = "main"
#: Words :meth:`Catalog.resolve` reads as "the head of main"; no tag may take them.
HEAD_ALIASES = frozenset({"latest", "HEAD", MAIN})


#: The rule for dataset, user, site, volume and compute names, in words.
NAME_RULE = (
    "Use 1 to 64 characters: lowercase letters, digits, '.', '_' or '-', "
    "starting with a letter or a digit (for example 'chest-xray')."
)
#: The rule for tag and branch names, in words.
REF_RULE = (
    "Use 1 to 128 characters: letters, digits, '.', '_' or '-', starting with a letter or a "
    "digit; not 'latest', 'main' or 'HEAD', and not a 64-character commit id."
)


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it can name a dataset, else raise :class:`UserError` with the rule."""
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        raise UserError(f"invalid dataset name {name!r}", hint=NAME_RULE)
    return name


def check_ref_name(name: str, kind: str) -> str:
    """Return ``name`` if it can name a branch or a tag (``kind``), else raise :class:`UserError`.

    Refused: anything outside ``[A-Za-z0-9._-]`` (up to 128 characters), a full
    64-hex commit id (it would shadow that commit), and the head aliases
    ``latest``/``HEAD`` in any case (``main`` too for a tag).
    """
    if not isinstance(name, str) or not _REF_NAME.fullmatch(name):
        raise UserError(f"invalid {kind} name {name!r}", hint=REF_RULE)
    if _FULL_ID.fullmatch(name.lower()):
        raise UserError(
            f"{kind} name {name!r} looks like a commit id",
            hint="Choose a name that is not 64 hexadecimal characters.",
        )
    reserved = {a.lower() for a in HEAD_ALIASES} - ({MAIN} if kind == "branch" else set())
    if name.lower() in reserved:
        raise UserError(
            f"{kind} name {name!r} is reserved",
            hint="'latest', 'main' and 'HEAD' always mean the head of the main branch; "
            "choose another name.",
        )
    return name
