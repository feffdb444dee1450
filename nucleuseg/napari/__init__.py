"""The napari plugin of nucleuseg (npe2): segment nuclei in the viewer, open DSB 2018 image
folders and label images, save label images, synthetic nuclei as sample data.

napari finds the plugin through the ``napari.manifest`` entry point (``napari.yaml`` in this
folder) once the ``napari`` extra is installed: ``pip install "nucleuseg[napari]"``. Importing
this package imports neither napari nor Qt; only the dock widget (``_widget.py``) needs them, and
it is loaded by napari when it is opened.

- :func:`image_plane`, :func:`channel_choices` and :func:`segment` are what the dock widget
  runs, usable without a viewer;
- :func:`read_dsb_folder` and :func:`read_label_image` are the reader's two halves.

Examples
--------
>>> from nucleuseg.napari import channel_choices
>>> channel_choices((64, 64, 3), rgb=True)[:2]
[('all (colour)', None), ('0 (red)', 0)]
"""

from nucleuseg.napari._reader import get_reader, read_dsb_folder, read_label_image
from nucleuseg.napari._sample import synthetic_nuclei
from nucleuseg.napari._segment import (
    Segmentation,
    channel_choices,
    image_plane,
    load_segmenter,
    segment,
)
from nucleuseg.napari._writer import write_labels

__all__ = [
    "Segmentation",
    "channel_choices",
    "get_reader",
    "image_plane",
    "load_segmenter",
    "read_dsb_folder",
    "read_label_image",
    "segment",
    "synthetic_nuclei",
    "write_labels",
]
