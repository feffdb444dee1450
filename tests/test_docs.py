"""The interactive examples on the documentation pages run and print what the pages say.

Every ```pycon block of a page under docs/ is run as one doctest session per page, so the numbers
and outputs shown in the guide (RLE, the metric's edge cases, the CSV layouts) cannot drift from
the library.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PYCON = re.compile(r"^```pycon\n(.*?)^```", re.S | re.M)
PAGES = sorted(p.name for p in DOCS.glob("*.md") if PYCON.search(p.read_text()))
#: Pages whose sessions use an optional stack, and the extra that installs it.
NEEDS = {"large-images.md": (("dask", "zarr"), "large")}


def test_some_pages_have_sessions():
    assert {"data-formats.md", "metric.md"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_pycon_blocks_run(page):
    modules, extra = NEEDS.get(page, ((), ""))
    for module in modules:
        pytest.importorskip(
            module, reason=f'{page} needs {module}: pip install "nucleuseg[{extra}]"'
        )
    session = "\n".join(PYCON.findall((DOCS / page).read_text()))
    test = doctest.DocTestParser().get_doctest(session, {}, page, str(DOCS / page), 0)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
