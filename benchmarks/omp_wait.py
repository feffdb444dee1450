"""How OpenMP's wait policy trades idle speed against speed next to another busy process (torch).

Usage::

    python benchmarks/omp_wait.py [--steps 15] [--warmup 3] [--spincounts 300000,30000,3000]

torch's CPU kernels run on a GNU OpenMP (libgomp) thread pool whose threads, between two
parallel regions, spin for ``GOMP_SPINCOUNT`` iterations before they sleep (``OMP_WAIT_POLICY``
``ACTIVE``: spin forever; ``PASSIVE``: sleep at once). Spinning wins on an idle machine and
loses badly when another process wants the same cores: the spinning threads hold the cores the
waited-for thread needs. libgomp reads the variables when it loads, so each setting runs in a
fresh process (``train_throughput.py``'s measurement of the ``default`` preset, crop 128,
batch 8, and of prediction on a 520 x 696 image), once idle and once with a second process
burning one core. The table gives each setting's idle rate as a share of the unset (libgomp
default) row's, and the share of its own idle rate it keeps under contention.

Numbers depend on what else runs on the machine; run it on an otherwise idle one. The script
prints the processor's AVX2 / AVX-512 flags and the core count.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from common import cpu_summary

HERE = Path(__file__).resolve().parent


def _child(steps: int, warmup: int) -> None:
    sys.path.insert(0, str(HERE))
    import train_throughput as tt

    from nucleuseg.config import get_preset

    preset = get_preset("default")
    rates = {}
    for mode, context in (("idle", contextlib.nullcontext()), ("busy", tt.one_core_busy())):
        with context:
            train = tt._train("torch", preset, 128, 8, steps, warmup)
            gc.collect()
            infer = tt._infer("torch", preset, repeats=2)
            gc.collect()
        rates[mode] = {"train": train["images_per_s"], "predict": infer["520x696"]}
    print(json.dumps(rates))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed training steps (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (default 3)")
    parser.add_argument(
        "--spincounts",
        default="300000,30000,3000",
        help="GOMP_SPINCOUNT values to try besides unset and PASSIVE (default 300000,30000,3000)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.steps, args.warmup)
        return 0
    print(f"# {cpu_summary()}")
    settings: list[tuple[str, dict[str, str]]] = [("unset (libgomp default)", {})]
    settings += [(f"GOMP_SPINCOUNT={n}", {"GOMP_SPINCOUNT": n}) for n in args.spincounts.split(",")]
    settings += [("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"})]
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    rows = []
    for label, extra in settings:
        print(f"# {label} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--child", "--steps", str(args.steps)]
        command += ["--warmup", str(args.warmup)]
        done = subprocess.run(
            command, env={**base, **extra}, capture_output=True, text=True, check=True
        )
        rows.append((label, json.loads(done.stdout.strip().splitlines()[-1])))
    ref = rows[0][1]["idle"]
    print(
        "| setting | train img/s idle | vs unset | busy | kept | predict MP/s idle | vs unset "
        "| busy | kept |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in rows:
        cells = [label]
        for key, fmt in (("train", "{:.1f}"), ("predict", "{:.2f}")):
            idle, busy = r["idle"][key], r["busy"][key]
            cells += [
                fmt.format(idle),
                f"{idle / ref[key]:.0%}",
                fmt.format(busy),
                f"{busy / idle:.0%}",
            ]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
