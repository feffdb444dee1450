"""nucleuseg: find every cell nucleus in a microscopy image.

The same U-Net in Keras, PyTorch and Flax behind one API, with weights that move between
frameworks, and a framework-free core for the DSB 2018 data, Kaggle RLE and the DSB score.

Examples
--------
>>> import nucleuseg as ns
>>> sample = ns.data.synthetic_sample(seed=0, size=64)
>>> ns.metrics.dsb_score(sample.labels, sample.labels)
1.0
"""

from __future__ import annotations

import logging

from nucleuseg import config, data, errors, masks, metrics, models, rle
from nucleuseg.backends import available_backends, register_backend
from nucleuseg.config import PRESETS, InferenceConfig, Preset, TrainingConfig, UNetConfig
from nucleuseg.errors import NucleusegError
from nucleuseg.measurements import measure
from nucleuseg.segmenter import Segmenter

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())  # shown only where configured

__all__ = [
    "PRESETS",
    "InferenceConfig",
    "NucleusegError",
    "Preset",
    "Segmenter",
    "TrainingConfig",
    "UNetConfig",
    "__version__",
    "available_backends",
    "config",
    "data",
    "errors",
    "masks",
    "measure",
    "metrics",
    "models",
    "register_backend",
    "rle",
]
