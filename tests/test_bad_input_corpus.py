"""The bad-input corpus: every kind of unusable input a user can hand to nucleuseg, in one table.

Each case builds its bad input in ``tmp_path`` (or as an array), calls a public entry point the
way a user would, and names the :class:`~nucleuseg.errors.NucleusegError` subclass it must raise
and a regular expression its message must match: the file (or argument) and what is wrong. No
case may end in a raw numpy / Pillow / framework exception, a wrong result or a partial output.

The ``cli`` cases run ``nucleuseg.cli.main`` and expect exit status 2 with
``nucleuseg <command>: error: <message>`` on stderr and no traceback.

The corpus only grows: :data:`MINIMUM` records how many cases each category had when it was last
counted, and :func:`test_corpus_only_grows` fails if a category shrinks. Cases marked
"regression" were found by the fuzz tests (``tests/test_fuzz.py``) or the audit and fixed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import re
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import nucleuseg
from nucleuseg import checkpoint, cli, metrics, postprocess, rle
from nucleuseg.backends.base import init_weights
from nucleuseg.config import FORMAT_VERSION if False else None  # noqa: F401  (placeholder)
