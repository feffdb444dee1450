"""Atomic file writes: write to a temporary file beside the target, then rename into place.

A crash or a kill in the middle of a write leaves either the old file or the new one, never half
of either. Every file a user keeps (checkpoints, submissions, caches, figures) is written this way,
and gets the permissions an ordinary ``open`` would give it under the process umask (``0644``
under the usual ``022``), not the private ``0600`` of a temporary file.

Examples
--------
>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
>>> with atomic_write(target, "w") as f:
...     _ = f.write("hello")
>>> target.read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way to read it is to set it (briefly, to a value that opens nothing up).
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _umask_mode() -> int:
    """The permissions an ordinary ``open`` would give a new file (0o666 less the umask)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success, flush, fsync and rename it to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The final file. Its folder must exist.
    mode : {"wb", "w"}
        Binary or text mode.
    encoding, newline : str, optional
        Passed to :func:`open` in text mode.

    Notes
    -----
    If the body raises, the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _umask_mode())
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary path beside ``path``, then rename it into place.

    For writers that insist on a file name rather than a file object (matplotlib's ``savefig``,
    safetensors' ``save_file``). The temporary name keeps ``path``'s suffix so format detection
    by extension still works. The file gets the permissions an ordinary ``open`` would give it
    under the process umask, whatever mode ``write`` created it with.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # After the writer, not before: some writers (safetensors' save_file) replace the
        # temporary file with one of their own, created 0600.
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
