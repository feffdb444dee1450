"""Exceptions raised by nucleuseg.

Every error the library raises on bad input is a :class:`NucleusegError`, so a caller can catch
one class. Each subclass also derives from the matching built-in (``ValueError``, ``OSError``,
``ImportError``) so code written against the built-ins keeps working.

Examples
--------
>>> from nucleuseg.errors import NucleusegError, RLEError
>>> issubclass(RLEError, NucleusegError) and issubclass(RLEError, ValueError)
True
"""

from __future__ import annotations


class NucleusegError(Exception):
    """Base class of every error raised by nucleuseg."""


class InputError(NucleusegError, ValueError):
    """An array or argument passed to the API is unusable (dtype, shape, NaN, range)."""


class ImageReadError(NucleusegError, OSError):
    """An image file cannot be read or holds pixels the library does not accept."""


class DatasetError(NucleusegError, ValueError):
    """A dataset folder does not follow the layout it claims (missing images, bad masks, ...)."""


class MaskOverlapError(DatasetError):
    """Per-nucleus masks overlap and the chosen overlap policy is ``"error"``."""


class RLEError(NucleusegError, ValueError):
    """A run-length encoding is malformed or does not fit the image it describes."""


class CSVFormatError(NucleusegError, ValueError):
    """A labels, solution or submission CSV is malformed."""


class BackendUnavailable(NucleusegError, ImportError):
    """A backend name is unknown or its deep-learning framework is not installed."""


class ExtraMissing(NucleusegError, ImportError):
    """A feature needs an optional stack (a pip extra) that is not installed."""


class TrainingUnsupported(NucleusegError, NotImplementedError):
    """A backend that only predicts (such as ``"onnx"``) was asked to train."""


class CheckpointError(NucleusegError, ValueError):
    """A model file is not a valid nucleuseg safetensors checkpoint."""


class ConfigError(NucleusegError, ValueError):
    """A network or training configuration is invalid."""


__all__ = [
    "BackendUnavailable",
    "CSVFormatError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "ExtraMissing",
    "ImageReadError",
    "InputError",
    "MaskOverlapError",
    "NucleusegError",
    "RLEError",
    "TrainingUnsupported",
]


def clip(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters for an error message (``...`` marks the cut).

    Examples
    --------
    >>> clip("x" * 50, 10)
    'xxxxxxx...'
    """
    return text if len(text) <= limit else text[: limit - 3] + "..."
