"""The lake's value objects and their encodings: digests, manifests, commits, packs.

Layout of keys under the lake's prefix::

    blobs/ab/cdef...        one large file, stored alone (multipart upload)
    packs/<id>.pack         many small blobs back to back
    packs/<id>.idx          the pack's index: (digest, offset, length) per blob
    manifests/<digest>      a commit's sorted file list, msgpack + zstd
    commits/<id>.json       a commit: manifest digest, parents, author, message, stats

Everything is immutable and named by its content (BLAKE3), so writing an
object twice is harmless and a crash never corrupts what exists.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import blake3

from lakecache.errors import IntegrityError, InvalidPathError

DIGEST_HEX = 64
EMPTY_DIGEST = blake3.blake3(b"").hexdigest()


def hash_bytes(data: bytes) -> str:
    """BLAKE3 hex digest of ``data``."""
    return blake3.blake3(data).hexdigest()


def check_digest(digest: str) -> str:
    if len(digest) != DIGEST_HEX or any(c not in "0123456789abcdef" for c in digest):
        raise IntegrityError(f"not a BLAKE3 digest: {digest!r}")
    return digest


def blob_key(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest[2:]}"


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id}.pack"


def pack_index_key(pack_id: str) -> str:
    return f"packs/{pack_id}.idx"


def manifest_key(digest: str) -> str:
    return f"manifests/{digest}"


def commit_key(commit_id: str) -> str:
    return f"commits/{commit_id}.json"


def normalize_path(path: str) -> str:
    """Return the canonical form of a dataset-relative path, or raise InvalidPathError.

    Refuses absolute paths, ``..``, NUL and backslashes; collapses ``.`` and
    repeated slashes. Unicode, spaces and newlines are allowed.
    """
    if "\x00" in path:
        raise InvalidPathError(f"path {path!r} contains a NUL byte")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise InvalidPathError(f"path {path!r} is absolute; give a path relative to the dataset")
    if "\\" in path:
        raise InvalidPathError(f"path {path!r} contains a backslash")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidPathError(f"path {path!r} contains '..'")
    if not parts:
        raise InvalidPathError(f"path {path!r} is empty")
    return "/".join(parts)


def normalize_folder(folder: str | None) -> str:
    """A folder prefix: '' for the root, else 'a/b' (no trailing slash)."""
    if folder is None or folder.strip("/") in ("", "."):
        return ""
    return normalize_path(folder.strip("/"))


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file of a commit."""

    path: str
    digest: str
    size: int
    mode: int = 0o644

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where a blob's bytes are: alone (``pack_id`` None) or inside a pack."""

    digest: str
    size: int
    pack_id: str | None = None
    offset: int = 0

    @property
    def key(self) -> str:
        return pack_key(self.pack_id) if self.pack_id else blob_key(self.digest)


MANIFEST_FORMAT = "lakecache-manifest/1"


def encode_manifest(entries: Iterable[ManifestEntry]) -> bytes:
    """Encode sorted entries as zstd-compressed msgpack: a header, then one array per file.

    Entries must already be sorted by path (byte order of UTF-8) with unique paths;
    this is checked, since a diff is a merge that relies on it.
    """
    import msgpack
    import zstandard

    packer = msgpack.Packer(use_bin_type=True)
    cctx = zstandard.ZstdCompressor(level=3, threads=-1)
    chunks: list[bytes] = []
    prev: str | None = None
    body: list[bytes] = []
    count = 0
    for e in entries:
        # Code point order is UTF-8 byte order, so str comparison checks the byte order.
        if prev is not None and e.path <= prev:
            raise ValueError(f"manifest entries not sorted/unique at {e.path!r}")
        prev = e.path
        body.append(packer.pack((e.path, bytes.fromhex(e.digest), e.size, e.mode)))
        count += 1
    chunks.append(packer.pack({"format": MANIFEST_FORMAT, "count": count}))
    chunks.extend(body)
    return cctx.compress(b"".join(chunks))


def decode_manifest(data: bytes) -> Iterator[ManifestEntry]:
    """Decode what :func:`encode_manifest` wrote, validating every path."""
    import msgpack
    import zstandard

    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    unpacker = msgpack.Unpacker(raw=False, use_list=False, strict_map_key=False)
    unpacker.feed(raw)
    header = next(unpacker)
    if not isinstance(header, dict) or header.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(f"not a lakecache manifest (header {header!r:.80})")
    n = 0
    for path, digest, size, mode in unpacker:
        yield ManifestEntry(normalize_path(path), digest.hex(), size, mode)
        n += 1
    if n != header["count"]:
        raise IntegrityError(f"manifest truncated: {n} of {header['count']} entries")


@dataclass(frozen=True)
class Commit:
    """An immutable version of a dataset. Its id is the BLAKE3 of its canonical JSON."""

    dataset: str
    manifest: str
    parents: tuple[str, ...]
    author: str
    message: str
    created_at: str
    file_count: int
    bytes: int

    def to_json(self) -> builtins.bytes:  # the field 'bytes' shadows the type in here
        d = asdict(self)
        d["parents"] = list(self.parents)
        d["format"] = "lakecache-commit/1"
        return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def id(self) -> str:
        return hash_bytes(self.to_json())

    @classmethod
    def from_json(cls, data: builtins.bytes) -> Commit:
        d = json.loads(data)
        d.pop("format", None)
        d["parents"] = tuple(d["parents"])
        return cls(**d)


def encode_pack_index(entries: Iterable[tuple[str, int, int]]) -> bytes:
    """(digest, offset, length) per blob, as JSON lines; lets the lake be re-indexed."""
    return "".join(f"{d} {o} {n}\n" for d, o, n in entries).encode()


def decode_pack_index(data: bytes) -> list[tuple[str, int, int]]:
    out = []
    for line in data.decode().splitlines():
        d, o, n = line.split()
        out.append((check_digest(d), int(o), int(n)))
    return out


def new_pack_id() -> str:
    """Pack ids are random: the same blob may land in two packs after a crash; both are valid."""
    return os.urandom(16).hex()
