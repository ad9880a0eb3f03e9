"""Files a server makes once and all its processes then share (the secret key, the VAPID key).

Several processes often start at once on a fresh checkout (`make test` runs two
suites side by side; a deployment starts several servers). Each may find the
file missing and make its own; only one may win, and nobody may read the
winner's file before it is whole. So the content is written to a temporary
file beside it, then hard-linked into place: `link` fails if the name exists,
and the name only ever points at a complete file.
"""

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def create_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """The content of `path`; made by `make()` first if there is no such file (mode 0600)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        # FileExistsError: another process made it first, and everybody uses theirs.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_bytes()
