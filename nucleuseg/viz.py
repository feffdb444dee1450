"""Figures people look at: sample grids, predictions against the truth, training curves.

Everything returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state, no
display needed); :func:`save_figure` writes it atomically. Outlines are drawn thicker on large
images so they stay visible when the figure is scaled down, and match status uses colour-blind safe
colours: matched nuclei in green, false detections in vermillion, missed nuclei in yellow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from nucleuseg._atomic import atomic_save
from nucleuseg.masks import boundaries

MATCHED = (0.0, 0.62, 0.45)  # bluish green
FALSE_POSITIVE = (0.84, 0.37, 0.0)  # vermillion
MISSED = (0.94, 0.89, 0.26)  # yellow
NEUTRAL = (0.35, 0.7, 0.9)  # sky blue


def _figure(rows: int, cols: int, size: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cols * size, rows * size), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def display_image(image: np.ndarray) -> np.ndarray:
    """An image scaled for display (robust percentiles, original look kept), ``(H, W, 3)`` float."""
    x = np.asarray(image, np.float32)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    x = x[..., :3]
    low, high = np.percentile(x, (0.5, 99.8))
    return np.clip((x - low) / max(high - low, 1e-6), 0, 1)


def _outline_width(shape: tuple[int, ...]) -> int:
    return max(1, round(max(shape[:2]) / 350))


def draw_outlines(
    image: np.ndarray, labels: np.ndarray, colors: dict[int, tuple] | tuple = NEUTRAL
) -> np.ndarray:
    """Draw the outline of every labelled object on a display image.

    ``colors`` is one RGB tuple for all objects or ``{label: rgb}``.
    """
    canvas = display_image(image).copy()
    edge = boundaries(labels, "inner")
    width = _outline_width(labels.shape)
    if width > 1:
        grown = ndi.grey_dilation(np.where(edge, labels, 0), size=(width, width))
        edge_labels = np.where(grown > 0, grown, 0)
    else:
        edge_labels = np.where(edge, labels, 0)
    if isinstance(colors, tuple):
        canvas[edge_labels > 0] = colors
        return canvas
    lut = np.zeros((int(labels.max()) + 1, 3), np.float32)
    lut[:] = NEUTRAL
    for label, color in colors.items():
        lut[label] = color
    mask = edge_labels > 0
    canvas[mask] = lut[edge_labels[mask]]
    return canvas


def match_status(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5):
    """Which true and predicted objects are matched at IoU > ``threshold``.

    Returns ``(true_colors, pred_colors)``: ``{label: rgb}`` dicts colouring matched objects green,
    missed true objects yellow and false predictions vermillion.
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


def plot_samples(samples: Sequence, columns: int = 4):
    """A grid of samples: each image above its labels drawn as outlines."""
    samples = list(samples)
    cols = min(columns, len(samples))
    rows = -(-len(samples) // cols)
    fig, axes = _figure(2 * rows, cols, size=2.6)
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, sample in enumerate(samples):
        r, c = 2 * (k // cols), k % cols
        axes[r, c].imshow(display_image(sample.image))
        axes[r, c].set_title(
            f"{sample.image_id}\n{sample.kind}, {sample.shape[0]}x{sample.shape[1]}", fontsize=8
        )
        if sample.labels is not None:
            axes[r + 1, c].imshow(draw_outlines(sample.image, sample.labels))
            axes[r + 1, c].set_title(f"{int(sample.labels.max())} nuclei", fontsize=8)
    return fig


def plot_predictions(samples: Sequence, predictions: Sequence[np.ndarray], threshold: float = 0.5):
    """Image | ground truth | prediction, one row per sample, outlines coloured by match status.

    In the truth panel, nuclei the prediction found (IoU > ``threshold``) are green and missed
    ones yellow; in the prediction panel, matches are green and false detections vermillion.
    """
    from nucleuseg.metrics import score_image

    samples = list(samples)
    fig, axes = _figure(len(samples), 3, size=3.6)
    for row, (sample, pred) in enumerate(zip(samples, predictions, strict=True)):
        true_colors, pred_colors = match_status(sample.labels, pred, threshold)
        score = score_image(sample.labels, pred)
        panels = (
            (display_image(sample.image), f"{sample.image_id} ({sample.kind})"),
            (
                draw_outlines(sample.image, sample.labels, true_colors),
                f"truth: {len(true_colors)} nuclei, {len(true_colors) - int(score.tp[0])} missed",
            ),
            (
                draw_outlines(sample.image, pred, pred_colors),
                f"prediction: {len(pred_colors)}, {int(score.fp[0])} false; DSB {score.score:.2f}",
            ),
        )
        for ax, (picture, title) in zip(axes[row], panels, strict=True):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    fig.legend(
        handles=_legend_handles(), loc="outside lower center", ncol=3, fontsize=9, frameon=False
    )
    return fig


def _legend_handles():
    from matplotlib.patches import Patch

    return [
        Patch(color=MATCHED, label="matched (IoU > 0.5)"),
        Patch(color=MISSED, label="missed nucleus"),
        Patch(color=FALSE_POSITIVE, label="false detection"),
    ]


def plot_history(history):
    """Training loss and validation DSB score per epoch, on two labelled axes."""
    fig, axes = _figure(1, 1, size=4.0)
    fig.set_size_inches(6.5, 3.8)
    ax = axes[0, 0]
    epochs = [e.epoch for e in history.epochs]
    ax.plot(epochs, history.loss, color="#0072B2", marker="o", ms=3, label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="#0072B2")
    scores = [(e.epoch, e.score) for e in history.epochs if e.score is not None]
    if scores:
        right = ax.twinx()
        right.plot(*zip(*scores, strict=True), color="#D55E00", marker="s", ms=3)
        right.set_ylabel("validation DSB score", color="#D55E00")
        if history.best_epoch is not None:
            right.axvline(history.best_epoch, color="gray", ls=":", lw=1)
            right.annotate(
                f"best {history.best_score:.3f}",
                (history.best_epoch, history.best_score),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize=8,
            )
    ax.set_title("training history")
    ax.grid(alpha=0.3)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a figure to ``path`` (format from the suffix), atomically."""
    path = Path(path)
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
    return path


def save_extremes(
    dataset, predictions: dict, result, folder: str | os.PathLike, n: int = 3
) -> list[Path]:
    """Write the prediction figure for the ``n`` worst and ``n`` best scored images."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ranked = sorted(result.per_image, key=lambda s: s.score)
    written = []
    for name, chosen in (("worst", ranked[:n]), ("best", ranked[-n:][::-1])):
        samples = [dataset[s.image_id] for s in chosen]
        fig = plot_predictions(samples, [predictions[s.image_id] for s in samples])
        written.append(save_figure(fig, folder / f"{name}.png"))
    return written
