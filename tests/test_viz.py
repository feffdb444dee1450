"""Figures: readable outlines, match colours, labelled axes, files written."""

from __future__ import annotations

import numpy as np
import pytest

from nucleuseg import metrics, viz
from nucleuseg.data import make_synthetic, synthetic_sample
from nucleuseg.errors import InputError
from nucleuseg.training import EpochRecord, History

PNG = b"\x89PNG\r\n\x1a\n"


def square(shape=(12, 12), box=(slice(3, 9), slice(3, 9)), label=1):
    labels = np.zeros(shape, np.int32)
    labels[box] = label
    return labels


def test_outline_width_grows_with_the_image_shown_small():
    assert viz.outline_width((100, 100)) == 1
    assert viz.outline_width((1024, 1024)) > viz.outline_width((256, 256)) > 1
    assert viz.outline_width((1024, 1024), panel_pixels=1024) == 2


def test_draw_outlines_colours_the_boundary_only():
    labels = square()
    red = (1.0, 0.0, 0.0)
    rgb = viz.draw_outlines(np.zeros((12, 12)), labels, colors={1: red}, width=1, halo=False)
    assert rgb.shape == (12, 12, 3) and rgb.dtype == np.float32
    assert rgb[3, 5].tolist() == list(red)  # on the boundary
    assert rgb[5, 5].tolist() == [0.0, 0.0, 0.0]  # inside
    assert rgb[0, 0].tolist() == [0.0, 0.0, 0.0]  # background


def test_draw_outlines_halo_and_fill():
    image = np.full((12, 12), 200, np.uint8)
    image[0, 0] = 0  # so the display stretch keeps the rest bright
    labels = square()
    plain = viz.draw_outlines(image, labels, colors=(0.0, 1.0, 0.0), width=1, halo=False)
    haloed = viz.draw_outlines(image, labels, colors=(0.0, 1.0, 0.0), width=1)
    assert haloed[2, 5].sum() < plain[2, 5].sum()  # dark rim just outside the outline
    filled = viz.draw_outlines(image, labels, colors=(0.0, 1.0, 0.0), width=1, fill=0.5)
    assert filled[5, 5, 1] > filled[5, 5, 0]  # tinted green inside


def test_draw_outlines_distinct_colours_by_default():
    labels = square() + square(box=(slice(0, 2), slice(0, 2)), label=2)
    colors = viz.instance_colors(labels)
    assert set(colors) == {1, 2} and colors[1] != colors[2]
    rgb = viz.draw_outlines(np.zeros((12, 12)), labels, width=1, halo=False)
    assert rgb[3, 5].tolist() == pytest.approx(colors[1])


def test_draw_outlines_rejects_mismatched_shapes():
    with pytest.raises(InputError, match="shape"):
        viz.draw_outlines(np.zeros((10, 10)), square())


def test_match_status():
    truth = np.array([[1, 1, 0, 2, 0, 0]])
    pred = np.array([[5, 5, 0, 0, 0, 6]])
    true_colors, pred_colors = viz.match_status(truth, pred)
    assert true_colors == {1: viz.MATCHED, 2: viz.MISSED}
    assert pred_colors == {5: viz.MATCHED, 6: viz.FALSE_POSITIVE}


def test_plot_samples_picks_at_random_and_titles_counts():
    dataset = make_synthetic(6, size=32, seed=0)
    fig = viz.plot_samples(dataset, n=3, seed=1, columns=3)
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert all(
        any(kind in t for kind in ("fluorescence", "brightfield", "histology")) for t in titles[:3]
    )
    assert all("nucle" in t for t in titles[3:])
    with pytest.raises(InputError):
        viz.plot_samples([])


def test_plot_predictions_titles_and_legend():
    sample = synthetic_sample(2, size=48, kind="fluorescence")
    pred = np.where(sample.labels % 2 == 1, sample.labels, 0)  # half the nuclei found
    fig = viz.plot_predictions([sample], [pred], threshold=0.5)
    assert len(fig.axes) == 3
    score = metrics.dsb_score(sample.labels, pred)
    assert f"DSB score {score:.2f}" in fig.axes[2].get_title()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "matched (IoU > 0.5)" and len(legend) == 3
    with pytest.raises(InputError, match="one prediction per sample"):
        viz.plot_predictions([sample], [])


def history(scores):
    epochs = [EpochRecord(i + 1, 1.0 / (i + 1), s, 1e-3, 1.0) for i, s in enumerate(scores)]
    valid = [s for s in scores if s is not None]
    best = max(valid) if valid else None
    return History(epochs, scores.index(best) + 1 if valid else None, best)


def test_plot_history_labels_its_axes():
    fig = viz.plot_history(history([0.2, 0.5, 0.4]))
    loss_ax, score_ax = fig.axes
    assert loss_ax.get_ylabel() == "training loss"
    assert score_ax.get_ylabel() == "validation DSB score"
    assert score_ax.get_xlabel() == "epoch"
    assert any("best epoch 2" in t.get_text() for t in score_ax.texts)
    alone = viz.plot_history(history([None, None]))
    assert len(alone.axes) == 1 and alone.axes[0].get_xlabel() == "epoch"


def test_save_figure_and_extremes(tmp_path):
    path = viz.save_figure(viz.plot_history(history([0.1, 0.3])), tmp_path / "curve.png")
    assert path.read_bytes()[:8] == PNG
    dataset = make_synthetic(3, size=32, seed=4)
    preds = {s.image_id: s.labels for s in dataset}
    result = metrics.score_dataset(preds, preds)
    written = viz.save_extremes(dataset, preds, result, tmp_path / "figs", n=1)
    assert [p.name for p in written] == ["worst.png", "best.png"]
    assert all(p.read_bytes()[:8] == PNG for p in written)
