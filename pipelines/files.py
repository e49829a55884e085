"""Files written atomically (a temporary name in the same folder, then a rename), with the mode the
user's umask gives, so an interrupted run never leaves a half-written artefact behind."""
from __future__ import annotations

import contextlib
import os
import tempfile


def _mode_from_umask() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path, payload: bytes | str) -> None:
    """Write `payload` (bytes, or str as UTF-8 without newline translation) to `path`.

    mkstemp makes its file 0600; the finished file gets 0666 minus the umask, as `open` would give.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload.encode("utf-8") if isinstance(payload, str) else payload)
        os.chmod(tmp, _mode_from_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
