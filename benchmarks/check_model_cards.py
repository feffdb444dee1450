"""The scores on each shipped model's card, measured again on its validation split.

Usage::

    python benchmarks/check_model_cards.py [--data PATH] [--model NAME] [--backend NAME]

PATH is the labelled folder the cards were validated on (DSB 2018 ``stage1_train``); by default
``stage1_train`` under ``$NUCLEUSEG_DSB`` when that is set, else
``../shared/data/dsb2018/stage1_train`` (the folder beside the checkout). For each shipped model
(:func:`nucleuseg.models.list_models`), or only ``--model``, the card's ``validation.command`` (a
``nucleuseg evaluate`` command line) is read with the command line's own parser, so the same
split (``--split``, ``--val-fraction``, ``--seed``), flips (``--tta``) and backend are used, and
the model is evaluated on PATH. It prints, for the DSB score overall, AP at IoU 0.5 and the DSB
score of each image kind, the card's value, the measured one and the difference, marking
differences over 0.005; the exit status is 1 when any is marked.

``--compare FILE`` also evaluates a model file on the same split, such as the float32 file a
shipped float16 model was made from, and prints its DSB score beside the shipped one's (a
difference over 0.002 is marked).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from common import BESIDE_CHECKOUT, cpu_summary

from nucleuseg import cli, models
from nucleuseg.data import load_dataset, resolve_dsb_path
from nucleuseg.errors import NucleusegError

TOLERANCE = 0.005


def evaluate_card(
    info: models.ModelInfo, data: str, backend: str | None, compare: str | None = None
) -> list[tuple]:
    """``(what, card, measured)`` rows for one model."""
    command = info.card["validation"]["command"]
    words = shlex.split(command)
    if not words or words[0] != "nucleuseg" or words[1:2] != ["evaluate"]:
        raise SystemExit(f"{info.name}: validation.command is not a nucleuseg evaluate command")
    args = cli._parser().parse_args(words[1:])
    dataset = load_dataset(data, format=args.format)
    train, val = dataset.split(args.val_fraction, seed=args.seed)
    subset = {"all": dataset, "train": train, "val": val}[args.split]
    seg = models.pretrained(info.name, backend=backend or args.backend)
    if args.tta:
        seg.inference = seg.inference.replace(tta=True)
    started = time.perf_counter()
    result = seg.evaluate(subset, progress=False)
    seconds = time.perf_counter() - started
    print(
        f"{info.name}: {len(subset)} images ({args.split} of --val-fraction {args.val_fraction} "
        f"--seed {args.seed}{', tta' if args.tta else ''}) on {seg.backend}, {seconds:.0f} s"
    )
    if len(subset) != info.card["validation"]["images"]:
        print(f"  note: the card validated {info.card['validation']['images']} images")
    validation = info.card["validation"]
    rows = [
        ("DSB score", validation["dsb_score"], result.score),
        ("AP@0.5", validation["ap50"], result.ap50),
    ]
    measured = result.by_kind(subset.kinds())
    for kind in sorted(set(validation["per_kind"]) | set(measured)):
        rows.append((f"  {kind}", validation["per_kind"].get(kind), measured.get(kind)))
    if compare:
        from nucleuseg.segmenter import Segmenter

        other = Segmenter.load(compare, backend=seg.backend)
        other.inference = seg.inference
        score = other.evaluate(subset, progress=False).score
        mark = "  <-- differs by more than 0.002" if abs(score - result.score) > 0.002 else ""
        print(
            f"  {compare}: DSB score {score:.4f}, shipped {result.score:.4f}, "
            f"difference {result.score - score:+.4f}{mark}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="labelled folder (default: see the module docstring)")
    parser.add_argument("--model", help="only this shipped model")
    parser.add_argument("--backend", help="run on this backend (default: the card command's)")
    parser.add_argument("--compare", help="a model file to score on the same split (see above)")
    args = parser.parse_args(argv)
    data = args.data or ("stage1_train" if os.environ.get("NUCLEUSEG_DSB") else BESIDE_CHECKOUT)
    try:
        data = str(resolve_dsb_path(data))
        infos = [models.get_model(args.model)] if args.model else models.list_models()
    except NucleusegError as err:
        print(f"no data or model: {err}", file=sys.stderr)
        return 2
    if not infos:
        print("no shipped models")
        return 0
    print(cpu_summary())
    off = 0
    for info in infos:
        try:
            rows = evaluate_card(info, data, args.backend, args.compare)
        except NucleusegError as err:
            print(f"{info.name}: {err}", file=sys.stderr)
            return 2
        print(f"  {'':<16}{'card':>8}{'measured':>10}{'diff':>9}")
        for what, card, measured in rows:
            if card is None or measured is None:
                shown = [f"{v:.4f}" if v is not None else "-" for v in (card, measured)]
                print(f"  {what:<16}{shown[0]:>8}{shown[1]:>10}")
                continue
            diff = measured - card
            mark = "  <-- off by more than 0.005" if abs(diff) > TOLERANCE else ""
            off += bool(mark)
            print(f"  {what:<16}{card:8.4f}{measured:10.4f}{diff:+9.4f}{mark}")
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
