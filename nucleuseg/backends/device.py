"""Where a network runs: one device spec that every backend accepts.

A user names a device the same way for every backend, as the ``device`` keyword of
:class:`~nucleuseg.Segmenter`, :func:`~nucleuseg.backends.build_network` and each backend's
factory, or as ``--device`` on the command line:

==================  ============================================================================
spec                means
==================  ============================================================================
``None``            automatic: the first GPU when the framework sees one, else the CPU (also
                    ``"auto"``)
``"cpu"``           the CPU
``"gpu"``           the first GPU (``"cuda"`` is accepted as a synonym, as PyTorch spells it)
``"gpu:N"``         GPU number ``N`` as the framework counts them (also ``"cuda:N"``)
``N`` (an int)      GPU number ``N``
==================  ============================================================================

:func:`parse_device` turns a spec into a :class:`DeviceSpec` (and rejects a malformed one);
:meth:`DeviceSpec.resolve` then settles it against the GPUs a framework sees, which each backend
maps onto its own device object (``torch.device``, a ``tf.device`` scope, a JAX device).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nucleuseg.errors import ConfigError

#: What :func:`parse_device` accepts, as error messages quote it.
ACCEPTED = 'None (automatic), "cpu", "gpu", "gpu:N", "cuda", "cuda:N" or a GPU number N'

_SPEC = re.compile(r"(?P<kind>cpu|gpu|cuda|auto)(?::(?P<index>\d+))?")


@dataclass(frozen=True)
class DeviceSpec:
    """A device request: ``kind`` is ``"auto"``, ``"cpu"`` or ``"gpu"``, ``index`` the GPU number.

    Examples
    --------
    >>> DeviceSpec("gpu", 1)
    DeviceSpec(kind='gpu', index=1)
    >>> str(DeviceSpec("gpu", 1)), str(DeviceSpec("cpu"))
    ('gpu:1', 'cpu')
    """

    kind: str = "auto"
    index: int = 0

    def __str__(self) -> str:
        return f"gpu:{self.index}" if self.kind == "gpu" else self.kind

    def resolve(self, gpus: int, framework: str) -> DeviceSpec:
        """The concrete device (``"cpu"`` or ``"gpu:N"``) for a framework that sees ``gpus`` GPUs.

        ``"auto"`` becomes the first GPU when there is one, else the CPU.

        Raises
        ------
        ConfigError
            If a GPU is asked for and ``framework`` sees none, or fewer than its number needs.

        Examples
        --------
        >>> DeviceSpec().resolve(0, "torch"), DeviceSpec().resolve(2, "torch")
        (DeviceSpec(kind='cpu', index=0), DeviceSpec(kind='gpu', index=0))
        >>> DeviceSpec("gpu").resolve(0, "torch")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        nucleuseg.errors.ConfigError: device 'gpu:0': torch sees no GPU on this machine; use ...
        """
        if self.kind == "auto":
            return DeviceSpec("gpu", 0) if gpus > 0 else DeviceSpec("cpu")
        if self.kind == "gpu":
            if gpus == 0:
                raise ConfigError(
                    f"device {str(self)!r}: {framework} sees no GPU on this machine; "
                    f"use device='cpu' (or leave device unset)"
                )
            if self.index >= gpus:
                raise ConfigError(
                    f"device {str(self)!r}: {framework} sees {gpus} GPU(s), "
                    f"numbered 0 to {gpus - 1}"
                )
        return self


def parse_device(spec: DeviceSpec | str | int | None) -> DeviceSpec:
    """The :class:`DeviceSpec` a user's ``device`` argument asks for (see the module docstring).

    Raises
    ------
    ConfigError
        If ``spec`` is none of the accepted forms; the message names ``device`` and lists them.

    Examples
    --------
    >>> parse_device(None), parse_device("cpu")
    (DeviceSpec(kind='auto', index=0), DeviceSpec(kind='cpu', index=0))
    >>> parse_device("cuda:1") == parse_device("gpu:1") == parse_device(1)
    True
    >>> parse_device("tpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nucleuseg.errors.ConfigError: device 'tpu' is not a device spec; use None (automatic), "cpu", ...
    """
    if spec is None:
        return DeviceSpec()
    if isinstance(spec, DeviceSpec):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            raise ConfigError(f"device {spec}: a GPU number must be 0 or more")
        return DeviceSpec("gpu", spec)
    if isinstance(spec, str):
        match = _SPEC.fullmatch(spec.strip().lower())
        if match and not (match["index"] and match["kind"] in ("cpu", "auto")):
            kind = "gpu" if match["kind"] == "cuda" else match["kind"]
            return DeviceSpec(kind, int(match["index"] or 0))
    raise ConfigError(f"device {spec!r} is not a device spec; use {ACCEPTED}")


__all__ = ["ACCEPTED", "DeviceSpec", "parse_device"]
