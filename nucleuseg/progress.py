"""Progress bars for long work (loading, training, prediction), off with one flag."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], desc: str, enable: bool = True, total: int | None = None):
    """Wrap ``iterable`` in a tqdm bar on stderr when ``enable``; return it unchanged otherwise.

    Examples
    --------
    >>> list(progress_bar(range(3), "counting", enable=False))
    [0, 1, 2]
    """
    if not enable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
