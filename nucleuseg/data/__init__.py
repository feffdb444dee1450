"""Data: dataset formats by name (DSB 2018 folders, images + labels folders), the synthetic
nuclei generator, the sample cache.

Every source returns a lazy :class:`Dataset` of :class:`Sample` (image, int32 labels, id, kind).
:func:`load_dataset` opens a folder in the format its layout shows (or the one named);
:func:`list_formats` names the formats and :func:`register_format` adds one.

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
from nucleuseg.data.folders import label_files, load_folders
from nucleuseg.data.formats import (
    DataFormat,
    detect_formats,
    get_format,
    list_formats,
    load_dataset,
    register_format,
)
from nucleuseg.data.images import (
    image_shape,
    read_channels,
    read_image,
    read_labels,
    read_mask,
    write_image,
    write_labels,
)
from nucleuseg.data.kinds import image_kind
from nucleuseg.data.synthetic import make_synthetic, synthetic_sample

__all__ = [
    "KINDS",
    "DataFormat",
    "Dataset",
    "Sample",
    "SampleCache",
    "clear_cache",
    "default_cache_dir",
    "detect_formats",
    "get_format",
    "image_kind",
    "image_shape",
    "in_memory",
    "label_files",
    "list_formats",
    "load_dataset",
    "load_dsb",
    "load_folders",
    "make_synthetic",
    "preload",
    "read_channels",
    "read_image",
    "read_labels",
    "read_mask",
    "register_format",
    "resolve_dsb_path",
    "synthetic_sample",
    "write_image",
    "write_labels",
]
