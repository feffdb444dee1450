"""Griffe extension for the API reference: Sphinx roles in docstrings become cross-references.

The docstrings use Sphinx roles (``:func:`encode```, ``:class:`~nucleuseg.Segmenter```), which
read well in ``help()`` and in editors. mkdocstrings does not know them, so this extension rewrites
each role into an optional mkdocs-autorefs link: a link where the target is documented on the
site, plain code where it is not (a private helper, numpy, matplotlib). Short names are resolved
against the object's class, module and parent modules, as Sphinx does. A reST literal-block
marker (``text::`` before an indented block) becomes a plain colon (the indented block is a
Markdown code block already), and a reST definition list (a line holding only a double-backquoted term,
then an indented definition) and a reST simple table become Markdown ones.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[\w.]+?)(?:\(\))?`"
)
PACKAGE = "nucleuseg"
LITERAL_BLOCK = re.compile(r"(?<=\S)::\n\n")  # reST "text::" before an indented block
# reST definition list: a line holding only ``term``, then its indented definition.
DEFINITION = re.compile(r"^``(?P<term>[^`\n]+)``\n(?P<body>(?:    \S.*(?:\n|$))+)", re.M)


RULE = re.compile(r"^=+(?: +=+)+ *$")  # the rules of a reST simple table


def _tables(text: str) -> str:
    """Turn reST simple tables (``====  ====`` rules around a header) into Markdown tables."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        end = i + 3
        while end < len(lines) and not RULE.match(lines[end]):
            end += 1
        if not (RULE.match(lines[i]) and i + 2 < len(lines) and RULE.match(lines[i + 2])):
            out.append(lines[i])
            i += 1
            continue
        if end >= len(lines):
            out.extend(lines[i:])
            break
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        bounds = list(zip(starts, [*starts[1:], None], strict=True))

        def cells(line: str, bounds=bounds) -> list[str]:
            return [line[a:b].strip() for a, b in bounds]

        header = cells(lines[i + 1])
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        out.extend(
            "| " + " | ".join(cells(row)) + " |" for row in lines[i + 3 : end] if row.strip()
        )
        i = end + 1
    return "\n".join(out)


def _definition(match: re.Match) -> str:
    body = " ".join(line.strip() for line in match["body"].splitlines())
    return f"`{match['term']}`\n:   {body}\n\n"


def _exists(pkg: griffe.Module, path: str) -> str | None:
    """The canonical path of ``path`` (absolute) if griffe knows it, else ``None``."""
    if path == PACKAGE:
        return path
    if not path.startswith(PACKAGE + "."):
        return None
    try:
        found = pkg[path[len(PACKAGE) + 1 :]]
        if found.is_alias:
            return found.final_target.path
        return found.path
    except Exception:  # unknown name or an alias that does not resolve statically
        return None


def _scopes(obj: griffe.Object) -> list[str]:
    scopes = []
    current: Any = obj
    while current is not None:
        scopes.append(current.path)
        current = current.parent
    return scopes


def _rewrite(text: str, obj: griffe.Object, pkg: griffe.Module) -> str:
    def replace(match: re.Match) -> str:
        target = match["target"]
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        candidates = [target] + [f"{scope}.{target}" for scope in _scopes(obj)]
        for candidate in candidates:
            path = _exists(pkg, candidate)
            if path is not None:
                return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'
        return f"`{shown}`"

    text = _tables(DEFINITION.sub(_definition, ROLE.sub(replace, text)))
    return LITERAL_BLOCK.sub(":\n\n", text)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj.docstring.value, obj, pkg)
