"""pytest configuration for doctests: backend modules are collected only where their framework is,
and the search module only where optuna is."""

import importlib.util

from nucleuseg.backends import builtin_backends

collect_ignore = [
    backend.module.replace(".", "/") + ".py"
    for backend in builtin_backends().values()
    if importlib.util.find_spec(backend.framework) is None
]
if importlib.util.find_spec("optuna") is None:
    collect_ignore.append("nucleuseg/search.py")
