"""Recipe ablations: train variants of the ``default`` preset under one budget, compare DSB scores.

Each variant changes one field of the recipe. Every run trains on the same stratified split of a
DSB-style folder with the same seed and budget, keeps its best epoch by validation score, and
reports the validation DSB score (overall, with flip TTA, and per image kind).

    python benchmarks/ablate.py --data stage1_train --minutes 5.5 default batch_norm bce_only
    python benchmarks/ablate.py --data stage1_train --epochs 10 --steps 300 foreground_only

``--minutes`` gives every variant the same wall-clock budget (the cosine schedule follows it);
``--epochs`` gives every variant the same number of optimizer steps (``--epochs`` x ``--steps``),
which makes the comparison independent of how busy the machine is. Without either, 5.5 minutes.

Runs go one after another in this process (pass ``--parallel`` to start one process per variant,
for a machine with cores to spare). The data path comes from ``--data`` or ``NUCLEUSEG_DSB``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import nucleuseg as ns
from nucleuseg.config import Preset, get_preset


def variants() -> dict[str, Preset]:
    """The named one-change variants of the default recipe."""
    p = get_preset("default")
    t, n = p.training, p.network
    return {
        "default": p,
        "batch_norm": p.replace(network=n.replace(normalization="batch")),
        "scale_wide": p.replace(training=t.replace(scale_range=(0.5, 2.0))),
        "crop192": p.replace(training=t.replace(crop=192, batch_size=4)),
        "bce_only": p.replace(training=t.replace(loss="bce")),
        "relu": p.replace(network=n.replace(activation="relu")),
        "lr3e-3": p.replace(training=t.replace(learning_rate=3e-3)),
        "base8": p.replace(network=n.replace(base_filters=8)),
        "no_aug": p.replace(training=t.replace(augment=False)),
        "foreground_only": p.replace(
            network=n.replace(out_channels=1),
            inference=p.inference.replace(postprocess="components"),
        ),
    }


def run_variant(
    name: str,
    data: str,
    labels_csv: str | None,
    minutes: float | None,
    epochs: int | None,
    steps: int,
    backend: str,
    seed: int,
) -> dict:
    dataset = ns.data.load_dsb(data, labels_csv=labels_csv, progress=False)
    train, val = dataset.split(0.15, seed=seed)
    preset = variants()[name]
    preset = preset.replace(training=preset.training.replace(steps_per_epoch=steps))
    seg = ns.Segmenter(backend, preset=preset, seed=seed)
    started = time.perf_counter()
    history = seg.fit(
        train, validation=val, epochs=epochs or 10_000, max_minutes=minutes, progress=False
    )
    result = seg.evaluate(val, progress=False)
    seg.inference = seg.inference.replace(tta=True)
    tta = seg.evaluate(val, progress=False).score
    return {
        "variant": name,
        "score": result.score,
        "tta": tta,
        "kinds": result.by_kind(val.kinds()),
        "epochs": len(history.epochs),
        "best_epoch": history.best_epoch,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "variants",
        nargs="*",
        default=["default"],
        help=f"variants to run, of: {', '.join(variants())}",
    )
    parser.add_argument(
        "--data",
        default="stage1_train",
        help="DSB-style folder; a relative name is also looked up under "
        "$NUCLEUSEG_DSB (default: stage1_train)",
    )
    parser.add_argument("--labels-csv", help="solution CSV for an images-only folder")
    parser.add_argument("--minutes", type=float, help="wall-clock budget per variant")
    parser.add_argument("--epochs", type=int, help="epochs per variant (of --steps steps each)")
    parser.add_argument("--steps", type=int, default=500, help="steps between validations")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", action="store_true", help="one process per variant")
    parser.add_argument("--json", action="store_true", help="print one JSON line per variant")
    args = parser.parse_args(argv)
    if args.minutes is None and args.epochs is None:
        args.minutes = 5.5
    try:
        args.data = str(ns.data.resolve_dsb_path(args.data))
    except ns.NucleusegError as exc:
        parser.error(f"{exc} (pass --data or set NUCLEUSEG_DSB)")
    unknown = sorted(set(args.variants) - set(variants()))
    if unknown:
        parser.error(f"unknown variants {unknown}")

    if args.parallel and len(args.variants) > 1:
        common = [
            f"--data={args.data}",
            *([f"--minutes={args.minutes}"] if args.minutes is not None else []),
            *([f"--epochs={args.epochs}"] if args.epochs is not None else []),
            f"--steps={args.steps}",
            f"--backend={args.backend}",
            f"--seed={args.seed}",
            "--json",
        ]
        if args.labels_csv:
            common.append(f"--labels-csv={args.labels_csv}")
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, v, *common], stdout=subprocess.PIPE, text=True
            )
            for v in args.variants
        ]
        rows = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    else:
        rows = [
            run_variant(
                v,
                args.data,
                args.labels_csv,
                args.minutes,
                args.epochs,
                args.steps,
                args.backend,
                args.seed,
            )
            for v in args.variants
        ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print("| variant | DSB | with TTA | fluorescence | brightfield | histology | epochs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        k = r["kinds"]
        print(
            f"| {r['variant']} | {r['score']:.3f} | {r['tta']:.3f} | "
            f"{k.get('fluorescence', float('nan')):.3f} | {k.get('brightfield', float('nan')):.3f} | "
            f"{k.get('histology', float('nan')):.3f} | {r['epochs']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
