"""Sample data: synthetic nuclei with their true labels (:func:`nucleuseg.data.synthetic_sample`)."""

from __future__ import annotations

from typing import Any


def synthetic_nuclei(
    seed: int = 0, size: int = 256, kind: str = "fluorescence"
) -> list[tuple[Any, dict, str]]:
    """A synthetic image of nuclei and its true labels, as napari layers.

    Parameters
    ----------
    seed, size, kind
        As for :func:`nucleuseg.data.synthetic_sample`.

    Returns
    -------
    list of (data, metadata, layer type)
        The ``(H, W, 3)`` image (RGB) named ``synthetic``, then ``synthetic truth`` (labels,
        hidden), to compare with what the dock widget finds (``synthetic nuclei``).

    Examples
    --------
    >>> [(meta["name"], kind, data.shape) for data, meta, kind in synthetic_nuclei(size=64)]
    [('synthetic', 'image', (64, 64, 3)), ('synthetic truth', 'labels', (64, 64))]
    """
    from nucleuseg.data import synthetic_sample

    sample = synthetic_sample(seed, size=size, kind=kind)
    return [
        (sample.image, {"name": "synthetic", "rgb": True}, "image"),
        (sample.labels, {"name": "synthetic truth", "visible": False}, "labels"),
    ]
