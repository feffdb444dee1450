"""An on-disk cache of decoded samples, so a dataset is decoded once and then read back fast.

Each sample is one uncompressed ``.npz`` file holding the image, the label image, the kind and a
BLAKE2 checksum of all three. Its name is a hash of everything the sample was built from: the
source files' absolute paths, sizes and modification times, the loading options, and
:data:`CACHE_VERSION`. Editing, adding or removing a source file therefore changes the name, and
the stale entry is simply never asked for again (:func:`clear_cache` removes old entries).

Entries are written atomically and read with ``allow_pickle=False``. An entry that does not read
back exactly as written (not a zip, missing or extra keys, wrong shapes or dtypes, checksum
mismatch) is deleted and reported as a miss, so the caller rebuilds it; it is never used.

The folder is ``$NUCLEUSEG_CACHE`` when set, else ``~/.cache/nucleuseg``.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> cache = SampleCache(tempfile.mkdtemp())
>>> key = cache_key([], extra="demo")
>>> cache.get(key) is None
True
>>> cache.put(key, np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.int32), "fluorescence")
>>> entry = cache.get(key)
>>> entry.kind, entry.labels.sum(), cache.peek(key)
('fluorescence', np.int64(16), ('fluorescence', (4, 4)))
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleuseg._atomic import atomic_write
from nucleuseg.data.base import KINDS

CACHE_VERSION = 1
"""Bump when the stored layout, the decoding or :func:`~nucleuseg.data.kinds.image_kind` changes."""

_KEYS = frozenset({"version", "image", "labels", "has_labels", "kind", "shape", "checksum"})
_SUBDIR = "samples"


@dataclass(frozen=True)
class CachedSample:
    """One entry read back from the cache.

    Attributes
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` ``uint8`` or ``uint16``.
    labels : numpy.ndarray or None
        ``(H, W)`` ``int32``, or ``None`` when the sample has no labels.
    kind : str
        One of :data:`~nucleuseg.data.base.KINDS`.
    """

    image: np.ndarray
    labels: np.ndarray | None
    kind: str


def default_cache_dir() -> Path:
    """The cache folder: ``$NUCLEUSEG_CACHE`` if set, else ``~/.cache/nucleuseg``.

    Examples
    --------
    >>> isinstance(default_cache_dir(), Path)
    True
    """
    env = os.environ.get("NUCLEUSEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nucleuseg"


def cache_key(sources: Iterable[str | os.PathLike], extra: str = "") -> str:
    """A hex key naming one cache entry, from its source files and the options that shaped it.

    Each source contributes its absolute path, size and modification time in nanoseconds, so
    changing any source file, or the list of them, gives a new key.

    Parameters
    ----------
    sources : iterable of path
        The files the sample is decoded from, in a fixed order.
    extra : str
        Anything else the result depends on (loading options).

    Raises
    ------
    FileNotFoundError
        If a source file does not exist.

    Examples
    --------
    >>> len(cache_key([], extra="x")), cache_key([], "x") == cache_key([], "y")
    (40, False)
    """
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"nucleuseg-cache-v{CACHE_VERSION}\0{extra}\0".encode())
    for source in sources:
        path = os.path.abspath(source)
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode("utf-8", "replace"))
    return digest.hexdigest()


class SampleCache:
    """A folder of cached samples, one ``.npz`` file per key.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        The cache root; entries go in its ``samples/`` subfolder, created on first write.
        Defaults to :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self._folder = self.directory / _SUBDIR
        self._warned = False

    def __repr__(self) -> str:
        return f"SampleCache({str(self.directory)!r})"

    def path(self, key: str) -> Path:
        """The file of entry ``key`` (which may not exist)."""
        return self._folder / f"{key}.npz"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> CachedSample | None:
        """Read and verify entry ``key``; ``None`` if absent or damaged (then it is deleted)."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                entry = _verified(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, _Corrupt):
            entry = None
        if entry is None:
            self._delete(path)
        return entry

    def peek(self, key: str) -> tuple[str, tuple[int, int]] | None:
        """``(kind, (height, width))`` of entry ``key``, its pixels unread; ``None`` if absent.

        Only the small members are read (each protected by the zip's CRC); the full checksum is
        verified by :meth:`get`.
        """
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                if set(data.files) != _KEYS or int(data["version"]) != CACHE_VERSION:
                    raise _Corrupt
                kind, shape = str(data["kind"]), tuple(int(n) for n in data["shape"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile, _Corrupt):
            self._delete(path)
            return None
        if kind not in KINDS or len(shape) != 2:
            self._delete(path)
            return None
        return kind, (shape[0], shape[1])

    def put(self, key: str, image: np.ndarray, labels: np.ndarray | None, kind: str) -> None:
        """Write entry ``key`` atomically. A write that fails (full disk, read-only folder) warns
        once and leaves the cache without that entry."""
        has_labels = labels is not None
        stored = labels if has_labels else np.zeros((0, 0), np.int32)
        arrays = {
            "version": np.array(CACHE_VERSION, np.int64),
            "image": np.ascontiguousarray(image),
            "labels": np.ascontiguousarray(stored, dtype=np.int32),
            "has_labels": np.array(has_labels),
            "kind": np.array(kind),
            "shape": np.array(image.shape[:2], np.int64),
        }
        arrays["checksum"] = np.frombuffer(_checksum(arrays), np.uint8)
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.path(key), "wb") as handle:
                np.savez(handle, **arrays)
        except OSError as err:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"cannot write the sample cache in {self._folder} ({err}); "
                    "samples will be decoded again next time",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def clear(self) -> int:
        """Delete every entry; returns how many there were.

        Examples
        --------
        >>> import tempfile
        >>> SampleCache(tempfile.mkdtemp()).clear()
        0
        """
        count = sum(1 for _ in self._folder.glob("*.npz")) if self._folder.is_dir() else 0
        shutil.rmtree(self._folder, ignore_errors=True)
        return count

    def _delete(self, path: Path) -> None:
        """Delete a damaged entry's file (one already gone is fine)."""
        with contextlib.suppress(OSError):
            path.unlink()


def clear_cache(directory: str | os.PathLike | None = None) -> int:
    """Delete every cached sample under ``directory`` (default :func:`default_cache_dir`).

    Returns
    -------
    int
        The number of entries deleted.
    """
    return SampleCache(directory).clear()


class _Corrupt(Exception):
    """An entry reads as a zip but not as what was written."""


def _checksum(arrays: dict[str, np.ndarray]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for name in ("image", "labels", "has_labels", "kind", "shape"):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}\0".encode())
        digest.update(array.data)
    return digest.digest()


def _verified(data: np.lib.npyio.NpzFile) -> CachedSample:
    if set(data.files) != _KEYS:
        raise _Corrupt
    arrays = {name: data[name] for name in _KEYS}
    if arrays["version"].shape != () or int(arrays["version"]) != CACHE_VERSION:
        raise _Corrupt
    image, labels = arrays["image"], arrays["labels"]
    has_labels = arrays["has_labels"]
    if has_labels.dtype != bool or has_labels.shape != ():
        raise _Corrupt
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.uint16):
        raise _Corrupt
    if labels.dtype != np.int32 or labels.ndim != 2:
        raise _Corrupt
    if bool(has_labels) and labels.shape != image.shape[:2]:
        raise _Corrupt
    kind = arrays["kind"]
    if kind.dtype.kind != "U" or kind.shape != () or str(kind) not in KINDS:
        raise _Corrupt
    checksum = arrays.pop("checksum")
    if checksum.dtype != np.uint8 or checksum.tobytes() != _checksum(arrays):
        raise _Corrupt
    return CachedSample(image, labels if bool(has_labels) else None, str(kind))
