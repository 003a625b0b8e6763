"""Every error lakecache raises, in one hierarchy.

Each error carries a ``hint``: what the user can do about it. The CLI prints
``error: <message>`` and ``hint: <hint>`` and exits non-zero; it never shows a
traceback for a :class:`LakecacheError`.

::

    LakecacheError
    ├── UserError                  bad input: fix the command and run it again
    │   ├── InvalidPathError       a path that is absolute, has '..', NUL, or leaves the tree
    │   ├── NotFoundError          dataset, ref, commit or path that does not exist
    │   │   └── DatasetNotFoundError
    │   ├── AlreadyExistsError
    │   ├── AmbiguousRefError      a commit prefix that matches several commits
    │   ├── TooLargeError          more bytes than a limit allows; names the setting
    │   └── AccountDisabledError   the right password, for an account an admin disabled
    ├── ConflictError              someone else moved the branch while you committed
    │   ├── TakenOverError         a newer worker took over this fill or eviction: stop
    │   └── LeaseLostError         a lease lapsed and its cache was evicted
    ├── SourceError                the local files: unreadable, changing while read
    ├── InsufficientStorageError   no room left on the disk that receives an upload
    ├── IntegrityError             bytes whose hash disagrees with their name
    ├── LakeError                  the object store
    │   ├── ObjectNotFoundError
    │   └── LakeUnreachableError   retries exhausted; names the endpoint
    └── CatalogError               the metadata database
"""

from __future__ import annotations


class LakecacheError(Exception):
    """Base of every lakecache error; ``hint`` says what to do next."""

    default_hint = ""
    #: A server shows the message of a 5xx error of this class to the client (for the
    #: others it says only "internal error"): set where messages never name the server's
    #: hosts, paths or databases.
    public = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class UserError(LakecacheError):
    """The command or call was given something it cannot use."""


class InvalidPathError(UserError):
    default_hint = "Use relative paths inside the dataset, without '..', NUL or a leading '/'."


class NotFoundError(UserError):
    pass


class DatasetNotFoundError(NotFoundError):
    default_hint = (
        "List datasets with `lakecache data ls`, or create one with `lakecache data init NAME`."
    )


class AccountDisabledError(UserError):
    """The password was right, but an org admin disabled the account."""

    default_hint = "Ask an org admin to enable it: `lakecache user enable NAME`."


class AlreadyExistsError(UserError):
    pass


class AmbiguousRefError(UserError):
    default_hint = "Give more characters of the commit id."


class TooLargeError(UserError):
    """More bytes than a limit allows (an upload over a size setting); the message names
    the setting and the hint says how to get under it."""


class ConflictError(LakecacheError):
    default_hint = (
        "Another commit landed first. Your uploaded data is kept in the lake; "
        "run the same commit again (it reuses the uploaded packs) to commit on top of the new head."
    )


class TakenOverError(ConflictError):
    """This worker's claim on a cache (a fill or an eviction) was taken over by a newer one.

    Its fence token is older than the cache's: the worker must stop, remove only
    what it wrote itself, and leave the cache to the newer worker.
    """

    default_hint = (
        "Nothing to do: a newer worker took over (this one was paused or stopped "
        "heart-beating for too long) and finishes the job."
    )


class LeaseLostError(ConflictError):
    """A lease is gone: it lapsed (not renewed in time) and its cache was evicted."""

    default_hint = (
        "The files read under that lease may have vanished midway: run the job again "
        "(it asks for the cache again), and renew leases well within their TTL."
    )


class SourceError(LakecacheError):
    """A local file could not be read, or kept changing while it was read."""


class InsufficientStorageError(LakecacheError):
    """The disk that would receive the bytes has not enough free space for them. Its
    messages name the sizes sent, never a path or the server's free space."""

    default_hint = "Ask the server's operator to free space in its home folder, then run it again."
    public = True


class IntegrityError(LakecacheError):
    default_hint = (
        "The lake holds damaged data. Re-commit the affected files from a good copy, "
        "or restore the object from the lake's backup."
    )


class LakeError(LakecacheError):
    pass


class ObjectNotFoundError(LakeError):
    default_hint = (
        "The lake lost an object this commit needs; re-commit the files from a good copy."
    )


class LakeUnreachableError(LakeError):
    default_hint = (
        "Check that the endpoint is up and reachable, and the credentials, then run again."
    )


class CatalogError(LakecacheError):
    pass
