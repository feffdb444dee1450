"""No code path in the package can unpickle: a static scan of the source."""

import re
from pathlib import Path

import nucleuseg

PACKAGE = Path(nucleuseg.__file__).parent

FORBIDDEN = {
    "pickle.load": re.compile(r"\bpickle\.loads?\("),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load without weights_only=True": re.compile(
        r"torch\.load\((?![^)]*weights_only\s*=\s*True)"
    ),
    "np.load without allow_pickle=False": re.compile(
        r"\bnp\.load\((?![^)]*allow_pickle\s*=\s*False)"
    ),
}


def test_package_source_never_unpickles():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for what, pattern in FORBIDDEN.items():
            found += [f"{path.relative_to(PACKAGE)}: {what}" for _ in pattern.finditer(text)]
    assert not found, found


def test_the_scan_catches_what_it_looks_for():
    assert FORBIDDEN["pickle.load"].search("data = pickle.load(handle)")
    assert FORBIDDEN["torch.load without weights_only=True"].search("torch.load(path)")
    assert not FORBIDDEN["torch.load without weights_only=True"].search(
        "torch.load(path, weights_only=True)"
    )
    assert FORBIDDEN["np.load without allow_pickle=False"].search("np.load(path)")
