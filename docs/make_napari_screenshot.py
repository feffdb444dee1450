"""Make docs/images/napari.png: the viewer with the dock widget's result on a synthetic image.

    python docs/make_napari_screenshot.py MODEL [--out docs/images/napari.png]

MODEL is a shipped model's name (nuclei) or a model file. Runs headless: Qt's offscreen
platform, with an X display for napari's OpenGL canvas (run it under xvfb-run where there is
none).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--out", default="docs/images/napari.png")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()

    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from nucleuseg.napari import synthetic_nuclei
    from nucleuseg.napari._widget import MODEL_FILE, SegmentNuclei

    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(1200, 680)
    for data, meta, kind in synthetic_nuclei(seed=args.seed, size=320):
        getattr(viewer, f"add_{kind}")(data, **meta)
    widget = SegmentNuclei(viewer)
    viewer.window.add_dock_widget(widget, name="Segment nuclei")
    if os.path.exists(args.model):
        widget.model.value = MODEL_FILE
        widget.model_file.value = args.model
    else:
        widget.model.value = args.model
    if args.backend:
        widget.backend.value = args.backend
    QApplication.processEvents()
    viewer.reset_view()
    widget.run()
    while not widget.run_button.enabled:
        QApplication.processEvents()
        time.sleep(0.05)
    print(widget.status.value)
    labels = viewer.layers["synthetic nuclei"]
    labels.contour = 2
    viewer.layers.selection.active = labels
    viewer.cursor.position = tuple(
        float(v) for v in labels.features[["centroid_y", "centroid_x"]].iloc[0]
    )
    QApplication.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(shot).convert("RGB").save(args.out, optimize=True)
    print(f"{args.out}: {shot.shape[1]} x {shot.shape[0]}, {os.path.getsize(args.out) // 1024} KB")
    viewer.close()


if __name__ == "__main__":
    main()
