"""Listing the folders of a dataset layout, for the format readers of :mod:`nucleuseg.data`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nucleuseg.errors import DatasetError

SHOWN = 5
"""How many offending names an error message lists."""


def listing(folder: Path) -> list[os.DirEntry]:
    """Entries of ``folder`` sorted by name, hidden ones (``.name``) left out, links checked.

    Raises
    ------
    DatasetError
        If the folder cannot be listed, or an entry is a broken symbolic link or a link loop.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as err:
        raise DatasetError(f"{folder}: cannot list folder ({err.strerror or err})") from None
    for entry in entries:
        if entry.is_symlink():
            try:
                Path(entry.path).resolve(strict=True)
            except (OSError, RuntimeError):
                raise DatasetError(f"{entry.path}: broken symbolic link or symlink loop") from None
    return entries


def is_dir(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder (or a link to one); ``False`` where that cannot be told."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def shown(names: Sequence[str]) -> str:
    """The first :data:`SHOWN` names, comma-separated, with ``...`` when there are more."""
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
