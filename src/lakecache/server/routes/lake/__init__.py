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
blob index) and kept under ``state/scopes/``: derived data, rebuilt if lost,
and worked out again when lake garbage collection has moved its blobs (a read
that misses a key the blob index records checks the scopes against the index;
see :class:`.access.LakeAccess`).
Deduplication can point a dataset at a pack another dataset wrote, whose
other blobs it must not see: such a pack gets no presigned URL, only the
server's own, which serves it with every byte outside the caller's datasets'
blobs zeroed (the client verifies each blob it reads against its hash).
A PUT is allowed to writers only, for a content-addressed key (``packs/``,
``blobs/``, ``manifests/``, ``commits/``) that does not exist yet: an existing
key is answered ``exists`` (or ``prove``, below) and never overwritten.
Presigned URLs live :data:`URL_TTL` seconds; a PUT's URL is signed with its
Content-Length and ``If-None-Match: *``, so it takes exactly the bytes declared
and never replaces an object.

Trust. Nothing a client uploads is believed until the server has hashed it
(:mod:`.verify`): a pack is recorded only after its index hashes to the pack's
id and the pack, read back once in ranged GETs of whole blobs (several at
once, each hashed as it arrives), holds blobs that hash to what the index says;
a large blob only after it is read back and hashes to its key. Bytes that lie
are deleted and refused. A presigned PUT is signed with its size and
``If-None-Match: *``, and the server completes a multipart upload only
over no object, so nothing recorded is ever replaced. Knowing a digest grants
nothing (:mod:`.grants`): ``known`` and ``locate`` answer for the blobs that the
datasets the caller can read hold, or that their writers uploaded; a commit
may name only such blobs; a key that exists but holds blobs the caller's
datasets lack is answered ``prove``: its bytes go to the server, which hashes
them and stores nothing. A commit is added only if its object is in the lake
byte for byte, hashes to its id, names the caller as author, the head it
replaces as its only parent and the server's time (within a few minutes), and
its manifest hashes to its digest and matches the commit's counts.

Modules: :mod:`.access` (roles, scopes, signing), :mod:`.grants` (which blobs a
dataset may name), :mod:`.verify` (hashing what clients uploaded), :mod:`.models`
(the JSON), :mod:`.transfer` (finding and moving bytes), :mod:`.records`
(recording what was uploaded, commits), :mod:`.objects` (bytes through the server).
"""

from __future__ import annotations

from fastapi import APIRouter

from lakecache.server.errors import COMMON_RESPONSES
from lakecache.server.routes.lake import objects, records, transfer

router = APIRouter(tags=["lake"], responses=COMMON_RESPONSES)
for _module in (transfer, records, objects):
    router.include_router(_module.router)
