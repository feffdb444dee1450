"""bioimage.io model packages: a nucleuseg model that deepImageJ, ilastik and bioimageio.core run.

:func:`export_bioimageio` writes a zip package in the current bioimage.io model specification
(format 0.5), built and checked with ``bioimageio.spec`` (extra ``bioimageio``:
``pip install "nucleuseg[bioimageio]"``). It holds

- ``rdf.yaml``, the description: the input ``image``, the output ``probabilities`` and the
  network's input normalisation in the spec's preprocessing terms;
- the weights as ONNX (the graph of :func:`nucleuseg.export.export_onnx`) and, where PyTorch is
  installed, as TorchScript (the torch backend's U-Net, traced, with the same input and output);
- a test input (a synthetic image) and the test output (the network's probabilities on it), as
  ``.npy`` files, which the bioimage.io tools recompute from the weights;
- a cover image (the test image with the nuclei that nucleuseg finds in it outlined);
- the documentation: the model card of a shipped model, or a generated one, followed by what the
  package's tensors are and the post-processing that turns the probabilities into nuclei;
- ``nucleuseg.safetensors``, nucleuseg's own model file, as an attachment, from which
  :func:`load_bioimageio` gives back a :class:`~nucleuseg.Segmenter`.

The input is an ``(batch, y, x, channel)`` ``float32`` image with three channels (gray images
repeated, as :func:`nucleuseg.transforms.as_rgb` does), height and width multiples of
``2 ** (depth - 1)``. Its preprocessing is nucleuseg's normalisation
(:func:`nucleuseg.transforms.normalize`): ``scale_range`` from the 1st to the 99.8th percentile
over all pixels and channels of each image, ``clip`` to ``[0, 1]``, and, for a package exported
with ``polarity="dark"`` (brightfield and stained images, where nuclei are dark), ``scale_linear``
with gain -1 and offset 1, the inversion. The spec has no operation that decides the polarity per
image, as nucleuseg does (:func:`nucleuseg.transforms.image_modality`), so the choice is made at
export: one package per polarity.

The output is the network's sigmoid probability channels, ``(batch, y, x, channel)`` of the
input's height and width: ``foreground``, ``contour`` and ``touching`` (where two nuclei meet) for
the three-channel presets, ``foreground`` alone for ``seed``. Instances come from
:func:`nucleuseg.postprocess.to_instances`, which the package's documentation describes.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nucleuseg import checkpoint
from nucleuseg._atomic import atomic_save
from nucleuseg._extras import require
from nucleuseg.errors import CheckpointError, InputError

#: The polarities :func:`export_bioimageio` takes: nuclei brighter or darker than the background.
POLARITIES = ("bright", "dark")

#: The attachment holding nucleuseg's own model file.
MODEL_FILE = "nucleuseg.safetensors"

#: The names of the output channels, as :data:`nucleuseg.masks.TARGET_CHANNELS`.
_PERCENTILES = (1.0, 99.8)

_CITATIONS = (
    (
        "Caicedo et al. Nucleus segmentation across imaging experiments: the 2018 Data Science "
        "Bowl. Nature Methods 16, 1247-1253 (2019)",
        "10.1038/s41592-019-0612-7",
    ),
    (
        "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015",
        "10.1007/978-3-319-24574-4_28",
    ),
)


def _channel_names(out_channels: int) -> list[str]:
    from nucleuseg.masks import TARGET_CHANNELS

    if out_channels <= len(TARGET_CHANNELS):
        return list(TARGET_CHANNELS[:out_channels])
    return [f"channel{i}" for i in range(out_channels)]


def _source(model: Any, workdir: Path) -> tuple[Any, dict[str, np.ndarray], Path, str | None]:
    """Preset, canonical weights, a model file to attach and the shipped name (or None)."""
    if isinstance(model, str | os.PathLike):
        from nucleuseg.models import is_shipped, resolve_model

        path = resolve_model(model)
        loaded = checkpoint.load_model(path)
        return loaded.preset, loaded.weights, path, os.fspath(model) if is_shipped(model) else None
    path = workdir / MODEL_FILE
    model.save(path)
    return model.preset, model.get_weights(), path, None


def _test_image(polarity: str, size: int, multiple: int) -> np.ndarray:
    """A synthetic image of the polarity's kind, of a size the network takes."""
    from nucleuseg.data import synthetic_sample

    size = max(multiple, size // multiple * multiple)
    kind = "fluorescence" if polarity == "bright" else "brightfield"
    return synthetic_sample(seed=0, size=size, kind=kind).image


def _normalised(image: np.ndarray, polarity: str) -> np.ndarray:
    """The network input the package's preprocessing gives: nucleuseg's normalisation with the
    intensity range over every pixel and the export's polarity."""
    from nucleuseg.transforms import NormalizationStats, as_rgb, normalize

    rgb = as_rgb(image).astype(np.float32)
    low, high = np.percentile(rgb, _PERCENTILES)
    if high - low < 1e-6:
        high = low + 1.0
    stats = NormalizationStats(float(low), float(high), invert=polarity == "dark")
    return normalize(rgb, stats)


def _torchscript(preset, weights: dict[str, np.ndarray], example: np.ndarray, path: Path) -> str:
    """Trace the torch backend's U-Net (NHWC in, sigmoid probabilities NHWC out) to ``path``;
    return the torch version."""
    import torch

    from nucleuseg.segmenter import Segmenter

    seg = Segmenter("torch", preset=preset, device="cpu")
    seg.set_weights(weights)
    unet = seg.network.model.eval()

    class _NHWC(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.sigmoid(self.net(x.permute(0, 3, 1, 2).contiguous()))
            return y.permute(0, 2, 3, 1).contiguous()

    wrapper = _NHWC(unet).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, torch.from_numpy(example), check_trace=False)
    traced.save(str(path))
    return torch.__version__.split("+")[0]


def _readme(preset, shipped: str | None, polarity: str, channels: list[str]) -> str:
    from nucleuseg import __version__

    if shipped is not None:
        from nucleuseg.models import card_markdown

        head = card_markdown(shipped).rstrip() + "\n"
    else:
        head = (
            f"# nucleuseg model (preset `{preset.name}`)\n\n"
            "A U-Net that finds cell nuclei in microscopy images, from nucleuseg's preset "
            f"`{preset.name}`: depth {preset.network.depth}, {preset.network.base_filters} "
            f"base filters, output channels {', '.join(f'`{c}`' for c in channels)}.\n"
        )
    invert = (
        "then `scale_linear` with gain -1 and offset 1: this package is for images whose nuclei "
        "are **darker** than the background (brightfield, H&E), which it inverts"
        if polarity == "dark"
        else "no inversion: this package is for images whose nuclei are **brighter** than the "
        "background (fluorescence); for brightfield and H&E images, export with "
        "`--polarity dark` or invert the image first"
    )
    meaning = {
        "foreground": "the probability that a pixel is in a nucleus",
        "contour": "the probability that it is on a nucleus's inner contour (its border pixels)",
        "touching": "the probability that it is where two nuclei meet",
    }
    lines = "\n".join(f"- `{c}`: {meaning.get(c, 'a network output')}" for c in channels)
    return f"""{head}
## This bioimage.io package

Exported by nucleuseg {__version__}.

**Input** `image`: `(batch, y, x, channel)`, `float32`, three channels (repeat a gray image
three times); height and width multiples of {preset.network.multiple}. Preprocessing, as
nucleuseg normalises: `scale_range` between the percentiles {_PERCENTILES[0]:g} and
{_PERCENTILES[1]:g} over all pixels and channels of each image, `clip` to [0, 1], {invert}.

**Output** `probabilities`: `(batch, y, x, channel)`, the input's height and width, sigmoid
probabilities in [0, 1]:

{lines}

**From probabilities to nuclei.** The package stops at the probabilities, as the bioimage.io
spec expects. nucleuseg's post-processing (`nucleuseg.postprocess.to_instances`, method
`{preset.inference.postprocess}` for this model) makes the instance labels:
{_postprocess_words(preset.inference)}

nucleuseg also resizes images so that nuclei have the size the model was trained at
(`--diameter`), tiles large images with overlap and can average flips; a tool running this
package sees the network alone, so give it images whose nuclei are about
{2 * preset.inference.target_radius:g} pixels across.

**In Python**, the package loads back into nucleuseg with its own model file
(`{MODEL_FILE}`, attached):

```python
from nucleuseg.bioimageio import load_bioimageio
seg = load_bioimageio("package.zip")
labels = seg.predict(image)
```

## Validation

Score the model on labelled images of your own (one label image per image, or masks) with
nucleuseg: `nucleuseg evaluate {MODEL_FILE} --data FOLDER --split all` prints the DSB 2018 score
(mean over IoU thresholds 0.5 to 0.95 of TP / (TP + FP + FN)) with the counts behind it, by
image kind. The bioimage.io tools check that the weights reproduce the test output
(`bioimageio test package.zip`).

"""


def _postprocess_words(inference) -> str:
    """The post-processing of ``inference`` (an InferenceConfig) in words, with its numbers."""
    if inference.postprocess == "components":
        return (
            f"threshold the foreground at {inference.threshold:g} and label the connected "
            f"components; fill holes and drop objects under {inference.min_size} pixels."
        )
    if inference.postprocess == "watershed":
        return (
            "markers are the connected components where `foreground - contour - touching` "
            f"exceeds {inference.seed_threshold:g} (the cores of the nuclei, cut apart where the "
            "network saw a boundary); a watershed on the foreground probability grows them over "
            f"the pixels whose foreground exceeds {inference.threshold:g}; foreground that no "
            "marker reaches becomes nuclei of its own; holes are filled and nuclei under "
            f"{inference.min_size} pixels dropped."
        )
    return f"the registered method `{inference.postprocess}`."


def _cover(image: np.ndarray, preset, weights: dict[str, np.ndarray], path: Path) -> None:
    """The test image with the nuclei nucleuseg finds in it outlined, as a PNG."""
    from PIL import Image

    from nucleuseg.segmenter import Segmenter
    from nucleuseg.viz import draw_outlines

    seg = Segmenter("onnx", preset=preset, device="cpu")
    seg.set_weights(weights)
    drawn = draw_outlines(image, seg.predict(image))
    Image.fromarray((np.clip(drawn, 0.0, 1.0) * 255).round().astype(np.uint8)).save(path)


def export_bioimageio(
    model: Any,
    path: str | os.PathLike,
    *,
    polarity: str = "bright",
    torchscript: bool | None = None,
    test_size: int = 256,
) -> Path:
    """Write ``model`` as a bioimage.io model package (a zip; see the module docstring).

    Parameters
    ----------
    model : Segmenter, str or os.PathLike
        A :class:`~nucleuseg.Segmenter` (any backend), a model file (``.safetensors``) or the
        name of a shipped model (:func:`nucleuseg.models.resolve_model`; its model card becomes
        the package's documentation).
    path : str or os.PathLike
        The ``.zip`` file to write (atomically); its folder must exist.
    polarity : {"bright", "dark"}
        ``"bright"``: the package's images have bright nuclei on a dark background
        (fluorescence); ``"dark"``: dark nuclei on a bright or stained background (brightfield,
        H&E), inverted by the preprocessing.
    torchscript : bool, optional
        Add TorchScript weights (needs PyTorch); default: where PyTorch is installed.
    test_size : int
        Height and width of the synthetic test image (rounded down to the network's multiple).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ExtraMissing
        If ``bioimageio.spec``, ``onnx`` or ``onnxruntime`` is missing (names the extra), or
        ``torchscript=True`` without PyTorch.
    InputError
        If ``path`` is a folder or its folder does not exist, or ``polarity`` is unknown.
    CheckpointError
        If ``model`` is neither a nucleuseg model file nor a shipped model's name, or the
        description fails the bioimage.io validation.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import nucleuseg as ns
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> seg = ns.Segmenter("onnx", preset="seed")
    >>> export_bioimageio(seg, folder / "nuclei.zip", torchscript=False, test_size=64).name
    'nuclei.zip'
    >>> load_bioimageio(folder / "nuclei.zip", backend="onnx").preset.name
    'seed'
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"path {target}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise InputError(f"path {target}: folder {target.parent} does not exist")
    if polarity not in POLARITIES:
        raise InputError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    if torchscript is None:
        torchscript = importlib.util.find_spec("torch") is not None
    if torchscript:
        require("torch", "torch", "TorchScript weights in a bioimage.io package")
    require("bioimageio.spec", "bioimageio", "bioimage.io export")
    require("onnx", "bioimageio", "bioimage.io export")
    require("onnxruntime", "bioimageio", "bioimage.io export")

    with tempfile.TemporaryDirectory(prefix="nucleuseg-bioimageio-") as tmp:
        work = Path(tmp)
        preset, weights, model_file, shipped = _source(model, work)
        _write_package(preset, weights, model_file, shipped, polarity, torchscript, test_size, work)
        package = work / "package.zip"
        atomic_save(target, lambda tmp: shutil.copyfile(package, tmp))
    return target


def _write_package(
    preset,
    weights: dict[str, np.ndarray],
    model_file: Path,
    shipped: str | None,
    polarity: str,
    torchscript: bool,
    test_size: int,
    work: Path,
) -> None:
    import onnx
    import tifffile
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as spec

    from nucleuseg import __version__
    from nucleuseg.backends.onnx_backend import build_onnx_model

    network = preset.network
    channels = _channel_names(network.out_channels)
    image = _test_image(polarity, test_size, network.multiple)
    x = _normalised(image, polarity)[None]

    onnx_model = build_onnx_model(network, weights)
    (work / "weights.onnx").write_bytes(onnx_model.SerializeToString())
    opset = max(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx"))
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(work / "weights.onnx"), providers=["CPUExecutionProvider"]
    )
    probabilities = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.save(work / "test_input.npy", as_float_batch(image))
    np.save(work / "test_output.npy", probabilities.astype(np.float32))
    tifffile.imwrite(work / "sample_input.tif", as_float_batch(image)[0])
    tifffile.imwrite(work / "sample_output.tif", probabilities[0].astype(np.float32))
    _cover(image, preset, weights, work / "cover.png")
    (work / "README.md").write_text(_readme(preset, shipped, polarity, channels), "utf-8")
    if model_file != work / MODEL_FILE:
        shutil.copyfile(model_file, work / MODEL_FILE)

    weights_descr = {
        "onnx": spec.OnnxWeightsDescr(
            source=work / "weights.onnx",
            opset_version=opset,
            comment=f"nucleuseg {__version__}, onnx {onnx.__version__}",
        )
    }
    if torchscript:
        version = _torchscript(preset, weights, x, work / "weights_torchscript.pt")
        weights_descr["torchscript"] = spec.TorchscriptWeightsDescr(
            source=work / "weights_torchscript.pt",
            pytorch_version=spec.Version(version),
            parent="onnx",
            comment="the torch backend's U-Net with the same canonical weights, traced",
        )

    m = network.multiple
    preprocessing: list = [
        spec.ScaleRangeDescr(
            kwargs=spec.ScaleRangeKwargs(
                axes=[spec.AxisId("y"), spec.AxisId("x"), spec.AxisId("channel")],
                min_percentile=_PERCENTILES[0],
                max_percentile=_PERCENTILES[1],
            )
        ),
        spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)),
    ]
    if polarity == "dark":
        preprocessing.append(
            spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=-1.0, offset=1.0))
        )
    image_id = spec.TensorId("image")
    inputs = [
        spec.InputTensorDescr(
            id=image_id,
            description="RGB image (gray repeated), nuclei "
            + ("darker" if polarity == "dark" else "brighter")
            + " than the background",
            axes=[
                spec.BatchAxis(),
                spec.SpaceInputAxis(
                    id=spec.AxisId("y"), size=spec.ParameterizedSize(min=m, step=m)
                ),
                spec.SpaceInputAxis(
                    id=spec.AxisId("x"), size=spec.ParameterizedSize(min=m, step=m)
                ),
                spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in ("r", "g", "b")]),
            ],
            test_tensor=spec.FileDescr(source=work / "test_input.npy"),
            sample_tensor=spec.FileDescr(source=work / "sample_input.tif"),
            data=spec.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=preprocessing,
        )
    ]
    outputs = [
        spec.OutputTensorDescr(
            id=spec.TensorId("probabilities"),
            description="sigmoid probabilities: " + ", ".join(channels),
            axes=[
                spec.BatchAxis(),
                spec.SpaceOutputAxis(
                    id=spec.AxisId("y"),
                    size=spec.SizeReference(tensor_id=image_id, axis_id=spec.AxisId("y")),
                ),
                spec.SpaceOutputAxis(
                    id=spec.AxisId("x"),
                    size=spec.SizeReference(tensor_id=image_id, axis_id=spec.AxisId("x")),
                ),
                spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in channels]),
            ],
            test_tensor=spec.FileDescr(source=work / "test_output.npy"),
            sample_tensor=spec.FileDescr(source=work / "sample_output.tif"),
            data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        )
    ]
    title = shipped or f"nucleuseg {preset.name}"
    descr = spec.ModelDescr(
        name=f"nucleuseg {title} ({polarity} nuclei)"
        if shipped
        else f"{title} ({polarity} nuclei)",
        description=(
            "U-Net for cell nucleus instance segmentation (nucleuseg): probability channels "
            f"{', '.join(channels)}; instances by nucleuseg's post-processing"
        ),
        authors=[spec.Author(name="nucleuseg developers")],
        cite=[spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in _CITATIONS],
        license=spec.LicenseId("BSD-3-Clause"),
        documentation=spec.FileDescr(source=work / "README.md"),
        covers=[spec.FileDescr(source=work / "cover.png")],
        attachments=[spec.FileDescr(source=work / MODEL_FILE)],
        tags=["nuclei", "instance-segmentation", "2d", "unet", "nucleuseg", "dsb2018"],
        inputs=inputs,
        outputs=outputs,
        weights=spec.WeightsDescr(**weights_descr),
        version="0.1.0",
        config=spec.Config(
            nucleuseg={
                "version": __version__,
                "preset": preset.name,
                "model_file": MODEL_FILE,
                "polarity": polarity,
            }
        ),
    )
    save_bioimageio_package(descr, output_path=work / "package.zip")


def as_float_batch(image: np.ndarray) -> np.ndarray:
    """An image as the package's input tensor: ``(1, H, W, 3)`` ``float32`` (gray repeated,
    alpha dropped, intensities unchanged).

    Examples
    --------
    >>> as_float_batch(np.zeros((4, 6), np.uint8)).shape
    (1, 4, 6, 3)
    """
    from nucleuseg.transforms import as_rgb

    return as_rgb(image).astype(np.float32)[None]


def load_bioimageio(
    path: str | os.PathLike, backend: str | None = None, device: str | int | None = None
):
    """The :class:`~nucleuseg.Segmenter` of a bioimage.io package exported by nucleuseg.

    Reads the package's attachment ``nucleuseg.safetensors`` (the model file; nothing else in
    the package is needed, and no bioimage.io library) and loads it into ``backend`` (default:
    the backend that saved it), as :meth:`Segmenter.load` does.

    Raises
    ------
    CheckpointError
        If ``path`` is missing, not a zip, or has no nucleuseg model file (a package that
        nucleuseg did not export).

    Examples
    --------
    >>> load_bioimageio("missing.zip")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.CheckpointError: missing.zip: no such file
    """
    from nucleuseg.segmenter import Segmenter

    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"{source}: no such file")
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            if MODEL_FILE not in names:
                raise CheckpointError(
                    f"{source}: no {MODEL_FILE} in the package; not a bioimage.io package "
                    "exported by nucleuseg"
                )
            data = archive.read(MODEL_FILE)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{source}: not a zip file (a bioimage.io package is one)") from exc
    with tempfile.TemporaryDirectory(prefix="nucleuseg-bioimageio-") as tmp:
        work = Path(tmp)
        (work / MODEL_FILE).write_bytes(data)
        return Segmenter.load(work / MODEL_FILE, backend=backend, device=device)
