"""Data: DSB 2018 folders, generic image folders, the synthetic nuclei generator.

Every source returns a lazy :class:`Dataset` of :class:`Sample` (image, int32 labels, id, kind).

Examples
--------
>>> from nucleuseg.data import make_synthetic
>>> train, val = make_synthetic(10, size=64, seed=0).split(0.2, seed=0)
>>> len(train) + len(val)
10
"""

from nucleuseg.data.base import KINDS, Dataset, Sample, in_memory
from nucleuseg.data.cache import SampleCache, clear_cache, default_cache_dir
from nucleuseg.data.dsb import load_dsb, preload, resolve_dsb_path
from nucleuseg.data.images import image_shape, read_image, read_labels, read_mask, write_image
from nucleuseg.data.kinds import image_kind
from nucleuseg.data.synthetic import make_synthetic, synthetic_sample

__all__ = [
    "KINDS",
    "Dataset",
    "Sample",
    "SampleCache",
    "clear_cache",
    "default_cache_dir",
    "image_kind",
    "image_shape",
    "in_memory",
    "load_dsb",
    "make_synthetic",
    "preload",
    "read_image",
    "read_labels",
    "read_mask",
    "resolve_dsb_path",
    "synthetic_sample",
    "write_image",
]
