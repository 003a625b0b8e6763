"""The lake for clients: commit and pull through the server, bytes straight to the lake.

A client working against a server (:mod:`lakecache.client`) never holds the
lake's credentials. It asks here, in batches, for what it may do:

==============================================  ========  ==================================
endpoint                                        role      what
==============================================  ========  ==================================
``GET /lake``                                   any user  mode (presign or stream), part size
``POST /lake/known``                            writer    digests the lake holds already
``POST /lake/locate``                           reader    where blobs are (pack, offset)
``POST /lake/exists``                           writer    which keys exist
``POST /lake/presign``                          reader    GET URLs for keys in scope
``POST /lake/presign``                          writer    PUT URLs for new keys, size-signed
``POST /lake/multipart``                        writer    start a large blob's upload, parts
``POST /lake/multipart/parts``                  writer    sign parts again (URLs expired)
``POST /lake/multipart/complete``, ``/abort``   writer    join the parts, or give up
``POST /lake/packs``, ``/lake/blobs``           writer    record uploads, once checked
``POST /lake/commits``                          writer    add a commit (compare-and-swap)
``GET /lake/commits/{id}``, ``/lake/log``       reader    commits, with manifest digests
``GET /lake/objects/{key}``                     reader    bytes streamed by the server
``PUT /lake/objects/{key}``                     writer    (a folder lake: no URLs to sign)
==============================================  ========  ==================================

Every request names the datasets it works for (``datasets`` in the body,
``dataset=`` in the query); the caller must hold the role on at least one of
them. Someone with no role on any gets the 404 of a dataset that does not
exist, as everywhere in the API.

Scope. A GET (presigned or streamed) is allowed only for a key that one of the
named datasets references: the manifest or commit object of one of its
commits, or a pack or large blob that one of its manifests holds. Which keys a
commit references is worked out once per commit (from its manifest and the
blob index) and kept under ``state/scopes/``: derived data, rebuilt if lost.
Deduplication can point a dataset at a pack another dataset wrote, whose
other blobs it must not see: such a pack gets no presigned URL, only the
server's own, which serves it with every byte outside the caller's datasets'
blobs zeroed (the client verifies each blob it reads against its hash).
A PUT is allowed to writers only, for a content-addressed key (``packs/``,
``blobs/``, ``manifests/``, ``commits/``) that does not exist yet: an existing
key is answered ``exists`` and never overwritten. Presigned URLs live
:data:`URL_TTL` seconds; a PUT's URL is signed with its Content-Length, so it
takes exactly the bytes declared.

Trust. Nothing a client uploads is believed until checked: a pack is recorded
only if its object exists with the declared size and its index hashes to the
pack's id and tiles the pack exactly; a large blob only if it exists with the
declared size; a commit only if its object is in the lake byte for byte, hashes
to its id, and its manifest exists, hashes to its digest, matches the commit's
counts and names only blobs the lake holds. Streamed uploads of blobs,
manifests, commits and pack indexes are hashed on the way in.

Modules: :mod:`.access` (roles, scopes, signing), :mod:`.models` (the JSON),
:mod:`.transfer` (finding and moving bytes), :mod:`.records` (recording what was
uploaded, commits), :mod:`.objects` (bytes through the server).
"""

from __future__ import annotations

from fastapi import APIRouter

from lakecache.server.errors import COMMON_RESPONSES
from lakecache.server.routes.lake import objects, records, transfer

router = APIRouter(tags=["lake"], responses=COMMON_RESPONSES)
for _module in (transfer, records, objects):
    router.include_router(_module.router)
