"""Optional stacks: import one where a feature needs it, or say which extra installs it.

Examples
--------
>>> require("json", "search", "hyperparameter search").__name__
'json'
>>> require("a_module_that_is_not_installed", "large", "block-wise prediction")
Traceback (most recent call last):
...
nucleuseg.errors.ExtraMissing: block-wise prediction needs a_module_that_is_not_installed, ...
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nucleuseg.errors import ExtraMissing


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``, or raise :class:`~nucleuseg.errors.ExtraMissing` naming ``extra``.

    Parameters
    ----------
    module : str
        The module the feature imports (``"zarr"``, ``"optuna"``, ...).
    extra : str
        The pip extra of nucleuseg that installs it.
    feature : str
        What needs it, as the message says it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExtraMissing(
            f"{feature} needs {module}, which is not installed ({exc}): "
            f'pip install "nucleuseg[{extra}]"'
        ) from exc
