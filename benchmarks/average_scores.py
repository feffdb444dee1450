"""Scores of weight averages of two models, by image kind and on synthetic tissue.

Usage::

    python benchmarks/average_scores.py --models FIRST SECOND [--data stage1_train]
        [--weights 0 0.1 0.2 0.3 0.4 0.5 1] [--tissue 30]

For each weight ``w`` of ``--weights`` the two models are averaged as ``(1 - w) x first + w x
second`` (:func:`nucleuseg.averaging.average_models`), and the average predicts what
``he_scores.py`` scores: the validation part of the DSB folder (``--val-fraction 0.15 --seed 0``)
by image kind, and ``--tissue`` synthetic dense H&E tissue images never trained on. ``w = 0`` is
the first model, ``w = 1`` the second. ``--models dsb2018.safetensors he`` (the DSB 2018 model
that ``he`` was trained from, see the models page) is how the shipped ``nuclei`` model's weight
(0.3 of ``he``) was chosen.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import cpu_summary, open_dsb
from he_scores import Table

from nucleuseg.averaging import average_models
from nucleuseg.checkpoint import save_model
from nucleuseg.models import pretrained


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="DSB folder (default: stage1_train under $NUCLEUSEG_DSB)")
    parser.add_argument("--models", nargs=2, required=True, metavar="MODEL")
    parser.add_argument(
        "--weights", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0]
    )
    parser.add_argument("--tissue", type=int, default=30, help="synthetic tissue images")
    args = parser.parse_args()
    if any(not 0.0 <= w <= 1.0 for w in args.weights):
        parser.error("--weights must lie in [0, 1]")
    print(cpu_summary())
    first, second = args.models
    dataset = open_dsb(args.data, masks=True)
    if dataset is None:
        return 2
    table = Table(dataset, args.tissue)
    print(table.header(f"weight of {second}"))
    with tempfile.TemporaryDirectory() as folder:
        for w in args.weights:
            model = average_models([first, second], [1.0 - w, w])
            path = Path(folder) / f"average_{w:g}.safetensors"
            save_model(path, model.weights, model.preset, model.backend)
            print(table.row(f"{w:g}", pretrained(str(path)).predict), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
