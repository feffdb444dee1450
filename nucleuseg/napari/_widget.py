"""The dock widget: segment the nuclei of an image layer into a labels layer with measurements.

napari builds it (``Plugins > nucleuseg > Segment nuclei``) with the viewer. It is a magicgui
:class:`~magicgui.widgets.Container`; without the ``napari`` extra this module still imports
(so that documentation and doctests see it), but the widget cannot be made.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nucleuseg.napari._segment import (
    Segmentation,
    channel_choices,
    image_plane,
    load_segmenter,
    segment,
)

try:
    from magicgui.widgets import Container
except ImportError:  # the napari extra is missing: SegmentNuclei() names it
    Container = object  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

#: The model choice that takes a model file instead of a shipped model.
MODEL_FILE = "model file..."


def _backends() -> list[str]:
    from nucleuseg.backends import available_backends, default_backend

    names = [b.name for b in available_backends() if b.available]
    first = default_backend() if names else None
    return sorted(names, key=lambda name: name != first)


class SegmentNuclei(Container):
    """Segment the nuclei of an image layer, without freezing the viewer.

    Choose a model (a shipped model by name, or a model file), a backend, the image layer, its
    channel (the nuclear stain of a multi-channel image, or all colours of an RGB image) and,
    optionally, the typical nucleus diameter in pixels (0: the image's own scale). **Segment**
    runs :func:`~nucleuseg.napari.segment` in a worker thread, with its steps in the progress
    bar, and puts the result in the labels layer ``<image> nuclei``, whose ``features`` table
    holds :func:`nucleuseg.measure`'s measurements of each nucleus (matched to the labels by
    its ``index`` column). Segmenting the same layer again replaces that layer's data.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose layers the widget reads and writes (napari passes it).

    Raises
    ------
    ExtraMissing
        If napari or magicgui is not installed (the ``napari`` extra).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        if Container is object:
            from nucleuseg._extras import require

            require("magicgui", "napari", "the napari dock widget")
        from magicgui.widgets import (
            ComboBox,
            FileEdit,
            FloatSpinBox,
            Label,
            ProgressBar,
            PushButton,
        )

        from nucleuseg.models import DEFAULT_MODEL, list_models

        self.viewer = napari_viewer
        shipped = sorted((info.name for info in list_models()), key=lambda n: n != DEFAULT_MODEL)
        self.model = ComboBox(label="model", choices=[*shipped, MODEL_FILE])
        self.model_file = FileEdit(label="model file", mode="r", filter="*.safetensors")
        self.backend = ComboBox(label="backend", choices=_backends())
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=False)
        self.channel = ComboBox(label="channel", choices=self._channels)
        self.diameter = FloatSpinBox(
            label="diameter (px)", value=0.0, min=0.0, max=10_000.0, step=1.0
        )
        self.diameter.tooltip = "typical nucleus diameter in pixels; 0: the image's own scale"
        self.run_button = PushButton(text="Segment")
        self.progress = ProgressBar(label="progress", value=0, min=0, max=2, visible=False)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.model,
                self.model_file,
                self.backend,
                self.image,
                self.channel,
                self.diameter,
                self.run_button,
                self.progress,
                self.status,
            ]
        )
        self.model_file.visible = self.model.value == MODEL_FILE
        self.model.changed.connect(self._on_model)
        self.image.changed.connect(lambda *_: self.channel.reset_choices())
        self.run_button.changed.connect(lambda *_: self.run())
        layers = napari_viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.moved):
            event.connect(self._on_layers)
        self.worker: Any = None

    # -- choices ------------------------------------------------------------------------------

    def _image_layers(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _channels(self, _widget: Any = None) -> list[tuple[str, int | None]]:
        layer = self.image.value if hasattr(self, "image") else None
        if layer is None:
            return [("gray", None)]
        try:
            return channel_choices(layer.data.shape, layer.rgb)
        except ValueError:
            return [("gray", None)]

    def _on_layers(self, *_: Any) -> None:
        self.image.reset_choices()
        self.channel.reset_choices()

    def _on_model(self, value: str) -> None:
        self.model_file.visible = value == MODEL_FILE

    # -- running ------------------------------------------------------------------------------

    def _model_source(self) -> str | Path:
        from nucleuseg.errors import InputError

        if self.model.value != MODEL_FILE:
            return self.model.value
        path = self.model_file.value
        if path is None or not Path(path).is_file():
            raise InputError(f"model file {str(path or '')!r}: choose a model file (.safetensors)")
        return Path(path)

    def run(self) -> Any:
        """Segment the chosen image layer in a worker thread; returns the started worker.

        The worker yields its steps (loading the model, segmenting and measuring) and returns
        a :class:`~nucleuseg.napari.Segmentation`, which the widget puts into the labels layer.
        A failure shows in the widget's status line and as a napari notification.
        """
        from napari.qt.threading import create_worker

        from nucleuseg.errors import InputError, NucleusegError

        layer = self.image.value
        try:
            if layer is None:
                raise InputError("image: no image layer to segment; open an image first")
            source = self._model_source()
            plane = image_plane(layer.data, layer.rgb, self.channel.value)
        except NucleusegError as err:
            self._fail(err)
            return None
        backend = self.backend.value
        diameter = float(self.diameter.value) or None

        def work():
            yield "loading the model"
            segmenter = load_segmenter(source, backend)
            yield "segmenting and measuring"
            return segment(segmenter, plane, diameter=diameter)

        self.run_button.enabled = False
        self.progress.value = 0
        self.progress.visible = True
        self.status.value = "starting"
        worker = create_worker(
            work,
            _progress={"total": 2, "desc": "Segmenting nuclei"},
            _ignore_errors=True,  # _fail reports them
        )
        worker.yielded.connect(self._on_step)
        worker.returned.connect(lambda found: self._on_done(layer, found))
        worker.errored.connect(self._fail)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    def _on_step(self, step: str) -> None:
        self.progress.value = self.progress.value + 1
        self.status.value = step

    def _on_done(self, layer: Any, found: Segmentation) -> None:
        from napari.layers import Labels

        name = f"{layer.name} nuclei"
        scale, translate = tuple(layer.scale)[-2:], tuple(layer.translate)[-2:]
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels):
            target = self.viewer.layers[name]
            target.data = found.labels
            target.features = found.features
            target.scale, target.translate = scale, translate
        else:
            self.viewer.add_labels(
                found.labels, name=name, features=found.features, scale=scale, translate=translate
            )
        self.progress.value = self.progress.max
        self.status.value = f"{found.count} nuclei in {found.seconds:.1f} s"
        logger.info("%s: %d nuclei in %.1f s", layer.name, found.count, found.seconds)

    def _fail(self, err: BaseException) -> None:
        from napari.utils.notifications import show_error

        self.status.value = f"failed: {err}"
        show_error(f"nucleuseg: {err}")

    def _on_finished(self) -> None:
        self.run_button.enabled = True
        self.progress.visible = False
