"""The backend registry: a name is enough to build the U-Net in any installed framework.

Built-in backends (``"torch"``, ``"keras"``, ``"flax"`` and the inference-only ``"onnx"``,
listed by :func:`builtin_backends` in order of preference) are known by module path and imported
only when first asked for, so ``import nucleuseg`` never imports a deep-learning framework.
Third-party packages add backends through the entry-point group ``nucleuseg.backends``; an entry
point named ``mynet`` pointing at ``mypkg.backend`` (a module that calls :func:`register_backend`)
or at a factory ``mypkg.backend:build`` makes ``Segmenter("mynet")`` work.

Examples
--------
>>> import nucleuseg as ns
>>> [b.name for b in ns.available_backends()]  # doctest: +SKIP
['flax', 'keras', 'torch']
>>> @ns.register_backend("tiny-doc", requires="numpy")
... def build(config, seed):
...     ...
>>> "tiny-doc" in ns.backends.registered_backends()
True
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from nucleuseg.backends.base import (
    BaseNetwork,
    Network,
    canonical_shapes,
    check_weights,
    parameter_count,
)
from nucleuseg.backends.device import DeviceSpec, parse_device
from nucleuseg.errors import BackendUnavailable

Factory = Callable[..., Network]

ENTRY_POINT_GROUP = "nucleuseg.backends"


@dataclass(frozen=True)
class BuiltinBackend:
    """A backend that ships with nucleuseg.

    Attributes
    ----------
    name : str
        The name users pass to :class:`~nucleuseg.Segmenter`.
    module : str
        The module that registers it (imported on first use).
    framework : str
        The Python module the backend needs.
    extra : str
        The pip extra that installs the framework (``pip install "nucleuseg[extra]"``).
    trains : bool
        Whether it trains (``False`` for ``"onnx"``, which only predicts).
    """

    name: str
    module: str
    framework: str
    extra: str
    trains: bool = True


# In order of preference: the command line's demo takes the first one installed.
_BUILTIN = (
    BuiltinBackend("torch", "nucleuseg.backends.torch_backend", "torch", "torch"),
    BuiltinBackend("keras", "nucleuseg.backends.keras_backend", "tensorflow", "keras"),
    BuiltinBackend("flax", "nucleuseg.backends.flax_backend", "flax", "flax"),
    BuiltinBackend("onnx", "nucleuseg.backends.onnx_backend", "onnxruntime", "onnx", trains=False),
)


def builtin_backends() -> dict[str, BuiltinBackend]:
    """The backends that ship with nucleuseg, by name, in order of preference.

    Examples
    --------
    >>> list(builtin_backends())
    ['torch', 'keras', 'flax', 'onnx']
    >>> builtin_backends()["keras"].framework
    'tensorflow'
    """
    return {backend.name: backend for backend in _BUILTIN}


@dataclass(frozen=True)
class BackendInfo:
    """One registered backend and whether it can run here.

    Attributes
    ----------
    name : str
    framework : str
        The Python module the backend needs (``"torch"``, ``"tensorflow"``, ``"flax"``, ...).
    version : str or None
        The installed framework's version, ``None`` when it is missing.
    available : bool
    source : str
        ``"builtin"``, ``"entry point"`` or ``"registered"``.
    """

    name: str
    framework: str
    version: str | None
    available: bool
    source: str

    def __str__(self) -> str:
        state = f"{self.framework} {self.version}" if self.available else "not installed"
        return f"{self.name:<8} {state}  ({self.source})"


@dataclass
class _BackendEntry:
    name: str
    requires: str
    extra: str | None
    factory: Factory | None = None
    module: str | None = None
    source: str = "registered"


_REGISTRY: dict[str, _BackendEntry] = {
    b.name: _BackendEntry(b.name, b.framework, b.extra, module=b.module, source="builtin")
    for b in _BUILTIN
}
_entry_points_loaded = False


def register_backend(
    name: str, requires: str | None = None, extra: str | None = None
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(config, seed) -> Network`` under ``name``.

    Parameters
    ----------
    name : str
        The name users pass to :class:`~nucleuseg.Segmenter`.
    requires : str, optional
        The module the backend imports (checked before building, for a clear error).
    extra : str, optional
        The pip extra that installs it, quoted in the error when it is missing.
    """

    def decorate(factory: Factory) -> Factory:
        entry = _REGISTRY.get(name)
        if entry is None:
            entry = _REGISTRY[name] = _BackendEntry(name, requires or "", extra)
        entry.factory = factory
        if requires:
            entry.requires = requires
        return factory

    return decorate


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = _BackendEntry(
                ep.name, "", None, source="entry point", module=ep.value
            )


def registered_backends() -> list[str]:
    """Names of every registered backend, installed or not, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def _framework_version(module: str) -> str | None:
    if not module:
        return ""
    if importlib.util.find_spec(module) is None:
        return None
    dist = {"tensorflow": "tensorflow", "flax": "flax", "torch": "torch"}.get(module, module)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def available_backends() -> list[BackendInfo]:
    """Every registered backend with its framework version and whether it can run here.

    Only checks that the framework is installed; nothing is imported.
    """
    infos = []
    for name in registered_backends():
        entry = _REGISTRY[name]
        version = _framework_version(entry.requires)
        infos.append(
            BackendInfo(name, entry.requires or "-", version, version is not None, entry.source)
        )
    return infos


def default_backend(trains: bool = False) -> str:
    """The first built-in backend, in the order of :func:`builtin_backends`, that is installed.

    What runs a model when no backend is named (``nucleuseg demo``, a pretrained model).

    Parameters
    ----------
    trains : bool
        Only a backend that trains (not ``"onnx"``, which only predicts): what ``nucleuseg demo``
        needs.

    Raises
    ------
    BackendUnavailable
        If none is installed (the message names the extra of the first).

    Examples
    --------
    >>> default_backend() in builtin_backends()
    True
    """
    installed = {info.name for info in available_backends() if info.available}
    for name, backend in builtin_backends().items():
        if name in installed and (backend.trains or not trains):
            return name
    first = _BUILTIN[0]
    what = "no backend that trains is installed" if trains else "no backend installed"
    raise BackendUnavailable(f'{what}: pip install "nucleuseg[{first.extra}]"')


def _install_hint(entry: _BackendEntry) -> str:
    if entry.extra:
        return f'pip install "nucleuseg[{entry.extra}]"'
    return f"pip install {entry.requires}" if entry.requires else "install the backend's package"


def get_backend(name: str) -> Factory:
    """The factory registered under ``name``, importing its module on first use.

    Raises
    ------
    BackendUnavailable
        If no backend has that name, or its framework is not installed (the message names the
        extra to install).
    """
    _load_entry_points()
    entry = _REGISTRY.get(name)
    if entry is None:
        raise BackendUnavailable(
            f"no backend named {name!r}; registered backends: {', '.join(registered_backends())}"
        )
    if entry.requires and importlib.util.find_spec(entry.requires) is None:
        raise BackendUnavailable(
            f"backend {name!r} needs {entry.requires}, which is not installed: "
            f"{_install_hint(entry)}"
        )
    if entry.factory is None:
        module, _, attr = (entry.module or "").partition(":")
        try:
            loaded = importlib.import_module(module)
        except ImportError as exc:
            raise BackendUnavailable(
                f"backend {name!r} failed to import ({exc}): {_install_hint(entry)}"
            ) from exc
        if attr:
            entry.factory = getattr(loaded, attr)
        if entry.factory is None:
            raise BackendUnavailable(f"module {module!r} did not register backend {name!r}")
    return entry.factory


def build_network(
    name: str,
    config,
    seed: int = 0,
    *,
    device: DeviceSpec | str | int | None = None,
    **options,
) -> Network:
    """Build the network of backend ``name`` for ``config``, initialised from ``seed``.

    Parameters
    ----------
    name : str
        A registered backend (:func:`registered_backends`).
    config : UNetConfig
    seed : int
        Seeds the initial weights (the same in every backend) and the dropout stream.
    device : None, str or int
        Where the network runs, the same spec for every backend: ``None`` (automatic: the first
        GPU when the framework sees one, else the CPU), ``"cpu"``, ``"gpu"`` (the first GPU),
        ``"gpu:N"`` or an int ``N`` (GPU ``N``); ``"cuda"`` and ``"cuda:N"`` as PyTorch spells
        them (see :mod:`nucleuseg.backends.device`). It is parsed here and passed on as a
        :class:`~nucleuseg.backends.device.DeviceSpec`; a factory that takes no ``device`` can
        still be built without one.
    **options
        Passed to the backend's factory, such as ``loss="bce"``.

    Raises
    ------
    BackendUnavailable
        If the backend is unknown, its framework is not installed, or what its factory built
        lacks a method of the :class:`~nucleuseg.backends.base.Network` contract.
    ConfigError
        If ``device`` is not a device spec, or asks for a GPU the framework does not see.

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> config = get_preset("seed").network.replace(depth=2, base_filters=2)
    >>> net = build_network("torch", config, seed=0, device="cpu")  # doctest: +SKIP
    >>> build_network("torch", config, device="tpu")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.ConfigError: device 'tpu' is not a device spec; use None (automatic), ...
    """
    if device is not None:
        options["device"] = parse_device(device)
    network = get_backend(name)(config, seed, **options)
    missing = [m for m in _CONTRACT if not callable(getattr(network, m, None))]
    if missing:
        raise BackendUnavailable(
            f"backend {name!r} built a {type(network).__name__} without {', '.join(missing)}: "
            "a network must provide every method of nucleuseg.backends.base.Network"
        )
    return network


#: The methods every network provides (:class:`~nucleuseg.backends.base.Network`).
_CONTRACT = tuple(
    name for name in vars(Network) if not name.startswith("_") and callable(vars(Network)[name])
)


__all__ = [
    "BackendInfo",
    "BaseNetwork",
    "BuiltinBackend",
    "DeviceSpec",
    "Network",
    "available_backends",
    "build_network",
    "builtin_backends",
    "canonical_shapes",
    "check_weights",
    "default_backend",
    "get_backend",
    "parameter_count",
    "parse_device",
    "register_backend",
    "registered_backends",
]
