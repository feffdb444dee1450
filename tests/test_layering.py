"""The package's layering, read from its own source: who may import whom.

- The core (masks, rle, metrics, transforms, postprocess, tiling, inference, large, measurements) is
  numpy code that knows no backend, no Segmenter, no command line and no deep-learning framework.
- ``nucleuseg.data`` reads and makes images: it knows no backend, no Segmenter, no command line.
- ``nucleuseg.backends`` knows only its contract: no data, no Segmenter, no post-processing, no
  training loop, no command line.
- ``nucleuseg.checkpoint`` and ``nucleuseg.history`` know no training loop: the loop imports
  them, so the other way round would be a cycle.

Every ``import`` and ``from ... import`` statement counts, also those inside functions (where the
package imports lazily) and under ``TYPE_CHECKING``; relative imports are resolved. A rule names
modules by prefix, so ``nucleuseg.backends`` covers ``nucleuseg.backends.base`` and
``from nucleuseg import backends``. A rule for a module that does not exist yet (such as
``nucleuseg.inference`` while it is being written) applies as soon as its file does.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import nucleuseg

PACKAGE = Path(nucleuseg.__file__).parent
FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "optax")
CORE = (
    "nucleuseg.masks",
    "nucleuseg.rle",
    "nucleuseg.metrics",
    "nucleuseg.transforms",
    "nucleuseg.postprocess",
    "nucleuseg.tiling",
    "nucleuseg.inference",
    "nucleuseg.large",
    "nucleuseg.measurements",
)


@dataclass(frozen=True)
class Rule:
    """Modules named by ``applies_to`` (prefixes) must not import any of ``forbidden``."""

    name: str
    applies_to: tuple[str, ...]
    forbidden: tuple[str, ...]

    def covers(self, module: str) -> bool:
        return any(_within(module, prefix) for prefix in self.applies_to)


RULES = (
    Rule(
        "the core knows no framework, no backend, no Segmenter, no CLI",
        CORE,
        ("nucleuseg.backends", "nucleuseg.segmenter", "nucleuseg.cli", *FRAMEWORKS),
    ),
    Rule(
        "data knows no backend, no Segmenter, no CLI",
        ("nucleuseg.data",),
        ("nucleuseg.backends", "nucleuseg.segmenter", "nucleuseg.cli"),
    ),
    Rule(
        "backends know only their contract: no data, no Segmenter, no post-processing, "
        "no training loop, no CLI",
        ("nucleuseg.backends",),
        (
            "nucleuseg.data",
            "nucleuseg.segmenter",
            "nucleuseg.postprocess",
            "nucleuseg.training",
            "nucleuseg.cli",
        ),
    ),
    Rule(
        "model files and histories know no training loop (which imports them)",
        ("nucleuseg.checkpoint", "nucleuseg.history"),
        ("nucleuseg.training", "nucleuseg.segmenter", "nucleuseg.cli"),
    ),
)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``nucleuseg.data.cache`` for ``nucleuseg/data/cache.py``; a package is its ``__init__``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of everything ``source`` imports, anywhere in it.

    ``from a.b import c`` yields both ``a.b`` and ``a.b.c`` (``c`` may be a submodule); relative
    imports are resolved against ``module`` (a package when ``is_package``).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor.pop()
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """One line per import in ``source`` that a rule covering ``module`` forbids."""
    problems = []
    for rule in RULES:
        if not rule.covers(module):
            continue
        reported: list[tuple[int, str]] = []
        for line, name in imported_names(source, module, is_package):
            if any(at == line and _within(name, shown) for at, shown in reported):
                continue  # "from a.b import c": a.b is reported, not a.b.c as well
            if any(_within(name, forbidden) for forbidden in rule.forbidden):
                reported.append((line, name))
                problems.append(f"{module}:{line} imports {name} ({rule.name})")
    return problems


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_the_package_keeps_its_layers(path):
    module = module_name(path)
    problems = violations(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    assert not problems, "\n".join(problems)


def test_the_rules_name_modules_that_exist():
    modules = {module_name(p) for p in SOURCES}
    for rule in RULES:
        for prefix in rule.applies_to:
            assert any(_within(m, prefix) for m in modules), f"{rule.name}: no module {prefix}"
    checked = [m for m in modules if any(rule.covers(m) for rule in RULES)]
    assert {
        "nucleuseg.masks",
        "nucleuseg.inference",
        "nucleuseg.data.dsb",
        "nucleuseg.backends.base",
    } <= set(checked)


def test_the_rules_catch_violations():
    lazy = "def f():\n    from nucleuseg.segmenter import Segmenter\n"
    assert violations(lazy, "nucleuseg.metrics") == [
        "nucleuseg.metrics:2 imports nucleuseg.segmenter "
        "(the core knows no framework, no backend, no Segmenter, no CLI)"
    ]
    assert violations("import torch.nn as nn\n", "nucleuseg.tiling")[0].startswith(
        "nucleuseg.tiling:1 imports torch.nn (the core knows no framework"
    )
    assert violations("import jax\n", "nucleuseg.inference")  # applies before the file exists
    assert violations("from nucleuseg import backends\n", "nucleuseg.masks")
    assert violations("from ..backends.base import Network\n", "nucleuseg.data.formats")[
        0
    ].startswith("nucleuseg.data.formats:1 imports nucleuseg.backends.base (data knows no")
    assert violations("from .. import postprocess\n", "nucleuseg.backends", is_package=True)
    assert violations("from ..data import Dataset\n", "nucleuseg.backends.torch_backend")
    assert violations(
        "if TYPE_CHECKING:\n    from nucleuseg.training import History\n",
        "nucleuseg.backends.base",
    )
    # what each layer may import
    assert not violations("import numpy\nfrom nucleuseg.masks import x\n", "nucleuseg.metrics")
    assert not violations("import torch\nfrom nucleuseg.config import C\n", "nucleuseg.backends.t")
    assert not violations("from nucleuseg.backends import build_network\n", "nucleuseg.segmenter")
    assert not violations("import torchvision\n", "nucleuseg.masks")  # a prefix, not a substring
    assert not violations("from nucleuseg.datasets import x\n", "nucleuseg.backends.base")
    assert violations("from nucleuseg.training import History\n", "nucleuseg.checkpoint")


def test_relative_imports_are_resolved():
    assert imported_names("from .base import KINDS\n", "nucleuseg.data.cache") == [
        (1, "nucleuseg.data.base"),
        (1, "nucleuseg.data.base.KINDS"),
    ]
    assert imported_names("from . import base\n", "nucleuseg.data", is_package=True) == [
        (1, "nucleuseg.data"),
        (1, "nucleuseg.data.base"),
    ]
    assert imported_names("from .. import rle\n", "nucleuseg.data.dsb")[1] == (1, "nucleuseg.rle")
