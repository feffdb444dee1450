"""Figures people look at: sample grids, predictions against the truth, training curves.

Every plotting function returns a :class:`matplotlib.figure.Figure` built without pyplot (no
global state, no display needed); :func:`save_figure` writes it atomically.

Readability rules the figures follow:

- images are scaled by robust percentiles and shown in their own colours (never a false-colour
  map that could hide dim nuclei);
- outlines are drawn at a width chosen for the size the image is *shown* at, so they stay visible
  when a 1000-pixel image is scaled into a small panel, and carry a dark halo so that light colours
  stay visible on bright nuclei;
- in sample grids every nucleus gets its own colour (touching nuclei are told apart); in prediction
  figures the colour says the match status, with the colour-blind safe Okabe-Ito palette: matched
  nuclei bluish green, false detections vermillion, missed nuclei yellow, explained in a legend.

Examples
--------
>>> from nucleuseg import viz
>>> from nucleuseg.data import make_synthetic
>>> fig = viz.plot_samples(make_synthetic(4, size=48, seed=0), n=2)
>>> len(fig.axes)
4
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from nucleuseg._atomic import atomic_save
from nucleuseg.masks import boundaries, check_labels

__all__ = [
    "DPI",
    "FALSE_POSITIVE",
    "MATCHED",
    "MISSED",
    "display_image",
    "draw_outlines",
    "instance_colors",
    "match_status",
    "outline_width",
    "plot_history",
    "plot_predictions",
    "plot_samples",
    "save_extremes",
    "save_figure",
]

MATCHED = (0.0, 0.62, 0.45)
"""Bluish green (Okabe-Ito): a nucleus matched at the IoU threshold."""
FALSE_POSITIVE = (0.84, 0.37, 0.0)
"""Vermillion (Okabe-Ito): a predicted nucleus that matches no true one."""
MISSED = (0.94, 0.89, 0.26)
"""Yellow (Okabe-Ito): a true nucleus that no prediction matches."""
LOSS_COLOR = "#0072B2"  # Okabe-Ito blue
SCORE_COLOR = "#D55E00"  # Okabe-Ito vermillion

DPI = 110
"""Resolution :func:`save_figure` writes at, and the one outline widths are planned for."""

_HALO = 0.75  # opacity of the dark rim around outlines


def _figure(rows: int, cols: int, size: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cols * size, rows * size), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def display_image(image: np.ndarray) -> np.ndarray:
    """An image scaled for display: ``(H, W, 3)`` ``float32`` in ``[0, 1]``.

    Intensities are stretched between the 0.5th and 99.8th percentiles, so a dim 16-bit image is
    as visible as an 8-bit one; colours are kept (grayscale becomes three equal channels, alpha is
    dropped).

    Examples
    --------
    >>> import numpy as np
    >>> x = display_image(np.array([[0, 1000], [2000, 4000]], np.uint16))
    >>> x.shape, float(x.min()), float(x.max())
    ((2, 2, 3), 0.0, 1.0)
    """
    x = np.asarray(image, np.float32)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    elif x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    x = x[..., :3]
    low, high = np.percentile(x, (0.5, 99.8))
    return np.clip((x - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)


def outline_width(shape: tuple[int, ...], panel_pixels: float = 300.0) -> int:
    """Outline width in image pixels for an image shown ``panel_pixels`` wide on screen.

    About two screen pixels: one image pixel when the image is shown at its own size or larger,
    more for large images shown small.

    Examples
    --------
    >>> outline_width((256, 256)), outline_width((1024, 1024)), outline_width((1024, 1024), 1000)
    (2, 7, 2)
    """
    scale = max(shape[:2]) / max(panel_pixels, 1.0)
    return max(1, round(2.0 * scale))


def instance_colors(labels: np.ndarray) -> dict[int, tuple[float, float, float]]:
    """A bright, distinct colour for every nucleus of a label image, ``{label: rgb}``.

    Hues follow the golden ratio in label order, so consecutive labels get well separated
    colours; the same label always gets the same colour.

    Examples
    --------
    >>> import numpy as np
    >>> colors = instance_colors(np.array([[0, 1, 2]]))
    >>> sorted(colors), len(set(colors.values()))
    ([1, 2], 2)
    """
    from matplotlib.colors import hsv_to_rgb

    ids = np.unique(check_labels(labels))
    ids = ids[ids > 0]
    hues = (ids * 0.6180339887 + 0.1) % 1.0
    hsv = np.stack([hues, np.full(ids.size, 0.75), np.full(ids.size, 1.0)], axis=1)
    rgb = hsv_to_rgb(hsv) if ids.size else np.zeros((0, 3))
    return {int(i): tuple(float(c) for c in color) for i, color in zip(ids, rgb, strict=True)}


def draw_outlines(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Mapping[int, tuple] | tuple | None = None,
    width: int | None = None,
    fill: float = 0.0,
    halo: bool = True,
) -> np.ndarray:
    """Draw the outline of every labelled object on a display copy of ``image``.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
        The image, any dtype (scaled with :func:`display_image`).
    labels : (H, W) integer array
        Label image, 0 = background.
    colors : rgb tuple, dict or None
        One RGB tuple (floats in ``[0, 1]``) for every object, ``{label: rgb}`` (objects not in
        the dict are drawn in grey), or ``None`` for a distinct colour per object
        (:func:`instance_colors`).
    width : int, optional
        Outline width in image pixels; default :func:`outline_width` for a 300-pixel panel.
    fill : float
        Opacity of a tint of the same colour inside each object (0 draws outlines only).
    halo : bool
        Put a dark rim on both sides of each outline so light colours show on bright nuclei.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` ``float32`` RGB in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((9, 9), int)
    >>> labels[2:7, 2:7] = 1
    >>> rgb = draw_outlines(np.zeros((9, 9)), labels, colors=(1.0, 0.0, 0.0), width=1)
    >>> rgb[2, 4].tolist(), rgb[4, 4].tolist()
    ([1.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    """
    labels = check_labels(labels)
    canvas = display_image(image)
    if canvas.shape[:2] != labels.shape:
        from nucleuseg.errors import InputError

        raise InputError(f"image has shape {canvas.shape[:2]} but labels {labels.shape}")
    width = outline_width(labels.shape) if width is None else max(1, int(width))
    top = int(labels.max()) if labels.size else 0
    lut = np.full((top + 1, 3), 0.6, np.float32)  # grey for objects without a colour
    if colors is None:
        colors = instance_colors(labels)
    if isinstance(colors, tuple):
        lut[1:] = colors
    else:
        for label, color in colors.items():
            if 0 < label <= top:
                lut[label] = color
    if fill > 0:
        inside = labels > 0
        canvas[inside] = (1 - fill) * canvas[inside] + fill * lut[labels[inside]]
    edge = boundaries(labels, "inner")
    owner = np.where(edge, labels, 0)
    if width > 1:
        # The inner boundary, widened: each pixel takes the highest label within reach.
        owner = ndi.grey_dilation(owner, size=(width, width))
    line = owner > 0
    if halo:
        rim = ndi.binary_dilation(line, iterations=max(1, width // 2)) & ~line
        canvas[rim] *= 1 - _HALO
    canvas[line] = lut[owner[line]]
    return canvas


def match_status(
    truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5
) -> tuple[dict[int, tuple], dict[int, tuple]]:
    """Colour each true and predicted object by whether it is matched at IoU > ``threshold``.

    Returns
    -------
    true_colors, pred_colors : dict of int to rgb
        Matched objects :data:`MATCHED`; missed true objects :data:`MISSED`; false predictions
        :data:`FALSE_POSITIVE`.

    Examples
    --------
    >>> import numpy as np
    >>> true_colors, pred_colors = match_status(np.array([[1, 1, 0, 2]]), np.array([[3, 3, 4, 0]]))
    >>> true_colors[1] == MATCHED, true_colors[2] == MISSED, pred_colors[4] == FALSE_POSITIVE
    (True, True, True)
    """
    from nucleuseg.metrics import iou_matrix

    iou, true_ids, pred_ids = iou_matrix(truth, pred)
    hit = iou > threshold
    true_hit = hit.any(axis=1) if hit.size else np.zeros(len(true_ids), bool)
    pred_hit = hit.any(axis=0) if hit.size else np.zeros(len(pred_ids), bool)
    true_colors = {
        int(t): MATCHED if h else MISSED for t, h in zip(true_ids, true_hit, strict=True)
    }
    pred_colors = {
        int(p): MATCHED if h else FALSE_POSITIVE for p, h in zip(pred_ids, pred_hit, strict=True)
    }
    return true_colors, pred_colors


def plot_samples(
    samples: Sequence, n: int | None = None, seed: int = 0, columns: int = 4, size: float = 2.6
):
    """A grid of samples: each image above the same image with its nuclei outlined.

    Every nucleus is outlined and lightly tinted in a colour of its own, so touching nuclei are
    told apart; titles give the id, kind, size and nucleus count.

    Parameters
    ----------
    samples : Dataset or sequence of Sample
        Where to draw from.
    n : int, optional
        Show ``n`` samples picked at random (with ``seed``); default: all of them, in order.
    seed : int
        Seed of the random pick.
    columns : int
        Samples per row.
    size : float
        Side of one panel in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if n is not None:
        picks = np.random.default_rng(seed).choice(len(samples), min(n, len(samples)), False)
        samples = [samples[int(i)] for i in np.sort(picks)]
    samples = list(samples)
    if not samples:
        from nucleuseg.errors import InputError

        raise InputError("samples is empty: nothing to plot")
    cols = min(columns, len(samples))
    rows = -(-len(samples) // cols)
    fig, axes = _figure(2 * rows, cols, size)
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, sample in enumerate(samples):
        r, c = 2 * (k // cols), k % cols
        axes[r, c].imshow(display_image(sample.image))
        axes[r, c].set_title(
            f"{sample.image_id}\n{sample.kind}, {sample.shape[0]}x{sample.shape[1]}", fontsize=8
        )
        if sample.labels is not None:
            width = outline_width(sample.labels.shape, size * DPI)
            outlined = draw_outlines(sample.image, sample.labels, width=width, fill=0.3)
            axes[r + 1, c].imshow(outlined)
            count = np.count_nonzero(np.unique(sample.labels))
            axes[r + 1, c].set_title(_count_label(count), fontsize=8)
    return fig


def plot_predictions(
    samples: Sequence,
    predictions: Sequence[np.ndarray],
    threshold: float = 0.5,
    size: float = 3.4,
):
    """Image | ground truth | prediction, one row per sample, outlines coloured by match status.

    In the truth panel, nuclei the prediction found (IoU > ``threshold``) are green and missed
    ones yellow; in the prediction panel, matches are green and false detections vermillion.
    Titles give the counts and the image's DSB score; a legend explains the colours.

    Parameters
    ----------
    samples : sequence of Sample
        Labelled samples.
    predictions : sequence of (H, W) integer arrays
        One predicted label image per sample.
    threshold : float
        IoU a match must exceed.
    size : float
        Side of one panel in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from nucleuseg.metrics import score_image

    samples = list(samples)
    predictions = list(predictions)
    if len(samples) != len(predictions) or not samples:
        from nucleuseg.errors import InputError

        raise InputError(
            f"need one prediction per sample, got {len(samples)} samples and "
            f"{len(predictions)} predictions"
        )
    fig, axes = _figure(len(samples), 3, size)
    for row, (sample, pred) in enumerate(zip(samples, predictions, strict=True)):
        true_colors, pred_colors = match_status(sample.labels, pred, threshold)
        missed = sum(color == MISSED for color in true_colors.values())
        false = sum(color == FALSE_POSITIVE for color in pred_colors.values())
        score = score_image(sample.labels, pred)
        width = outline_width(sample.labels.shape, size * DPI)
        panels = (
            (
                display_image(sample.image),
                f"{sample.image_id}\n{sample.kind}, {sample.shape[0]}x{sample.shape[1]}",
            ),
            (
                draw_outlines(sample.image, sample.labels, true_colors, width=width, fill=0.2),
                f"ground truth: {_count_label(len(true_colors))}\n{missed} missed",
            ),
            (
                draw_outlines(sample.image, pred, pred_colors, width=width, fill=0.2),
                f"prediction: {_count_label(len(pred_colors))}\n{false} false, DSB score {score.score:.2f}",
            ),
        )
        for ax, (picture, title) in zip(axes[row], panels, strict=True):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    fig.legend(
        handles=_legend_handles(threshold),
        loc="outside lower center",
        ncol=3,
        fontsize=9,
        frameon=False,
    )
    return fig


def _count_label(count: int) -> str:
    """``"1 nucleus"``, ``"3 nuclei"``: a count for a panel title."""
    return f"{count} nucleus" if count == 1 else f"{count} nuclei"


def _legend_handles(threshold: float):
    from matplotlib.patches import Patch

    edge = {"edgecolor": "black", "linewidth": 0.8}
    return [
        Patch(facecolor=MATCHED, label=f"matched (IoU > {threshold:g})", **edge),
        Patch(facecolor=MISSED, label="missed nucleus (truth only)", **edge),
        Patch(facecolor=FALSE_POSITIVE, label="false detection", **edge),
    ]


def plot_history(history):
    """Training loss and validation DSB score per epoch, in two panels sharing the epoch axis.

    The best epoch (whose weights the model keeps) is marked in both panels. Without validation
    scores only the loss panel is drawn.

    Parameters
    ----------
    history : nucleuseg.history.History
        What :meth:`nucleuseg.Segmenter.fit` returned (or ``segmenter.history``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [e.epoch for e in history.epochs]
    scores = [(e.epoch, e.score) for e in history.epochs if e.score is not None]
    rows = 2 if scores else 1
    fig = Figure(figsize=(6.4, 1.4 + 1.8 * rows), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    loss_ax = axes[0]
    loss_ax.plot(epochs, history.loss, color=LOSS_COLOR, marker="o", ms=3, lw=1.5)
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("training history", fontsize=11)
    best = history.best_epoch
    if scores:
        score_ax = axes[1]
        xs, ys = zip(*scores, strict=True)
        score_ax.plot(xs, ys, color=SCORE_COLOR, marker="s", ms=3, lw=1.5)
        score_ax.set_ylabel("validation DSB score")
        if best is not None and history.best_score is not None:
            score_ax.plot([best], [history.best_score], "o", ms=9, mfc="none", mec="black")
            score_ax.text(
                0.99,
                0.05,
                f"best epoch {best}: {history.best_score:.3f} (these weights are kept)",
                transform=score_ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            )
    for ax in axes:
        if best is not None:
            ax.axvline(best, color="gray", ls=":", lw=1)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write a figure to ``path`` (format from the suffix: ``.png``, ``.pdf``, ``.svg``), atomically.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
    return path


def save_extremes(
    dataset, predictions: Mapping[str, np.ndarray], result, folder: str | os.PathLike, n: int = 3
) -> list[Path]:
    """Write the prediction figures of the ``n`` worst and the ``n`` best scored images.

    Parameters
    ----------
    dataset : Dataset
        The labelled images that were scored.
    predictions : mapping of str to (H, W) integer array
        Predicted label images by image id.
    result : nucleuseg.metrics.DatasetScore
        Their scores (:func:`nucleuseg.metrics.score_dataset`).
    folder : path
        Created if missing; receives ``worst.png`` and ``best.png``.
    n : int
        Images per figure.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ranked = sorted(result.per_image, key=lambda s: s.score)
    written = []
    for name, chosen in (("worst", ranked[:n]), ("best", ranked[-n:][::-1])):
        samples = [dataset[s.image_id] for s in chosen]
        fig = plot_predictions(samples, [predictions[s.image_id] for s in samples])
        written.append(save_figure(fig, folder / f"{name}.png"))
    return written
