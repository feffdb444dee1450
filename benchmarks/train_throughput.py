"""Training and inference throughput of every installed backend, one after another, in one process.

Usage::

    python benchmarks/train_throughput.py [--preset seed] [--crop 128] [--batch 16] [--steps 10]
        [--warmup 3] [--backends torch,keras,flax,onnx] [--no-inference] [--inference-repeats 2]
        [--contention] [--loop]

For each backend the script builds the preset's network, runs ``--warmup`` training steps (the
first one compiles, where the backend compiles) and then ``--steps`` timed steps on a fixed random
batch of ``--batch`` crops of ``--crop`` pixels, and reports images per second (from the median
step), the convolution GFLOP/s that implies, and that rate as a fraction of a float32 numpy matrix
product measured in the same process (the machine's practical peak as numpy's BLAS sees it).

Convolution FLOPs are counted analytically from the canonical weight shapes: ``2 * H * W * k * k
* cin * cout`` per convolution at the resolution of its level (the transposed convolutions at
their input resolution), and a training step as three forward passes (forward, input gradients,
weight gradients).

Inference is timed through ``Segmenter(backend, preset).predict`` on synthetic 520x696 (the most
common DSB 2018 size) and 1024x1024 images: tiling, the network and post-processing together,
reported as megapixels of input per second (the ``seed`` preset resizes every image to 128x128
before the network, so its rate is mostly resizing and post-processing), and as a ratio to the
first backend's rate in the same run (torch where it is installed). A backend that only predicts
(``onnx``) gets the inference columns only.

``--loop`` also runs ``--steps`` steps through the real training loop
(:func:`nucleuseg.training.train`: crops cut and augmented from synthetic 256 x 256 images in its
background thread, the learning-rate schedule, the loss bookkeeping; no validation) after an
untimed epoch of ``--warmup`` steps, and reports the loop's steps per minute and images per second
as a share of the bare step's rate: what data preparation and bookkeeping cost a real run.

``--contention`` measures each backend twice, idle and then with a second process burning one
core (a CPU-bound loop, as another job on a shared server or a viewer on a laptop would), and
adds a table of the share of its idle throughput each backend keeps under contention.

Numbers depend on what else runs on the machine; run it on an otherwise idle one. numpy's matrix
product depends on its BLAS and on variables such as ``OPENBLAS_CORETYPE`` (which can force an
older kernel, e.g. AVX2 on an AVX-512 machine); the script reports them, and the processor's
AVX2 / AVX-512 flags, and changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from common import cpu_summary

from nucleuseg.backends import available_backends, builtin_backends, get_backend
from nucleuseg.backends.base import canonical_shapes
from nucleuseg.config import Preset, UNetConfig, get_preset
from nucleuseg.errors import NucleusegError

DEFAULT_ORDER = tuple(builtin_backends())
INFERENCE_SIZES = ((520, 696), (1024, 1024))


def conv_flops(config: UNetConfig, height: int, width: int) -> int:
    """Forward-pass convolution FLOPs (multiply and add counted as two) for one image.

    Examples
    --------
    >>> from nucleuseg.config import UNetConfig
    >>> conv_flops(UNetConfig(depth=2, base_filters=1, in_channels=1, out_channels=1), 2, 2)
    492
    """
    total = 0
    for name, shape in canonical_shapes(config).items():
        if not name.endswith(".kernel"):
            continue
        head = name.split(".")[0]
        level = 1 if head == "head" else int(head.lstrip("encdup"))
        if head.startswith("up"):
            level += 1  # a transposed convolution runs at its input's (coarser) resolution
        scale = 2 ** (level - 1)
        kh, kw, cin, cout = shape
        total += 2 * (height // scale) * (width // scale) * kh * kw * cin * cout
    return total


def numpy_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` float32 matrix product in numpy."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _train(name: str, preset: Preset, crop: int, batch: int, steps: int, warmup: int) -> dict:
    config = preset.network
    rng = np.random.default_rng(0)
    x = rng.random((batch, crop, crop, config.in_channels), dtype=np.float32)
    y = (rng.random((batch, crop, crop, config.out_channels)) > 0.7).astype(np.float32)
    start = time.perf_counter()
    net = get_backend(name)(config, 0, loss=preset.training.loss)
    built = time.perf_counter()
    net.train_step(x, y, 1e-4)
    first = time.perf_counter()
    for _ in range(warmup - 1):
        net.train_step(x, y, 1e-4)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        net.train_step(x, y, 1e-4)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {
        "build_s": built - start,
        "first_step_s": first - built,
        "images_per_s": batch / median,
        "best_images_per_s": batch / min(times),
        "gflops": 3 * conv_flops(config, crop, crop) * batch / median / 1e9,
    }


def _loop(name: str, preset: Preset, crop: int, batch: int, steps: int, warmup: int) -> dict:
    from nucleuseg.data import make_synthetic
    from nucleuseg.training import train

    data = make_synthetic(16, size=256, seed=0)
    recipe = preset.training.replace(crop=crop, batch_size=batch, resize=None)
    net = get_backend(name)(preset.network, 0, loss=preset.training.loss)
    warm = preset.replace(training=recipe.replace(steps_per_epoch=warmup))
    train(net, data, warm, epochs=1, progress=False)
    timed = preset.replace(training=recipe.replace(steps_per_epoch=steps))
    start = time.perf_counter()
    train(net, data, timed, epochs=1, progress=False)
    seconds = time.perf_counter() - start
    return {"steps_per_min": 60 * steps / seconds, "images_per_s": batch * steps / seconds}


def _infer(name: str, preset: Preset, repeats: int = 2) -> dict[str, float]:
    from nucleuseg.data.synthetic import synthetic_sample
    from nucleuseg.segmenter import Segmenter

    seg = Segmenter(name, preset)
    rates = {}
    for i, (h, w) in enumerate(INFERENCE_SIZES):
        image = synthetic_sample(seed=i, size=(h, w), kind="fluorescence").image
        seg.predict(image)  # compiles for this image's tile shapes where the backend compiles
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            seg.predict(image)
            best = min(best, time.perf_counter() - t)
        rates[f"{h}x{w}"] = h * w / best / 1e6
    return rates


def _version(name: str) -> str:
    for info in available_backends():
        if info.name == name:
            return f"{info.framework} {info.version}"
    return "?"


@contextlib.contextmanager
def one_core_busy():
    """A second process burning one core (a Python busy loop) for the duration of the block."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start
        yield
    finally:
        burner.kill()
        burner.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed", help="preset name (default: seed)")
    parser.add_argument("--crop", type=int, default=128, help="training crop side (default 128)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (default 3)")
    parser.add_argument(
        "--backends", default=None, help="comma-separated backends (default: every installed one)"
    )
    parser.add_argument("--no-inference", action="store_true", help="skip the inference timing")
    parser.add_argument(
        "--inference-repeats", type=int, default=2, help="timed predictions per size (best kept)"
    )
    parser.add_argument(
        "--contention",
        action="store_true",
        help="measure again with a second process burning one core; report the share kept",
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="also time --steps steps inside the real training loop (data preparation included)",
    )
    args = parser.parse_args(argv)
    if min(args.steps, args.warmup, args.batch, args.inference_repeats) < 1:
        parser.error("--steps, --warmup, --batch and --inference-repeats must be at least 1")

    try:
        preset = get_preset(args.preset)
    except NucleusegError as exc:
        parser.error(str(exc))
    if args.crop % preset.network.multiple:
        parser.error(f"--crop must be a multiple of {preset.network.multiple} for this preset")
    installed = [b.name for b in available_backends() if b.available]
    if args.backends:
        names = [n.strip() for n in args.backends.split(",") if n.strip()]
        missing = [n for n in names if n not in installed]
        if missing:
            print(f"not installed, skipped: {', '.join(missing)}", file=sys.stderr)
        names = [n for n in names if n in installed]
    else:
        names = [n for n in DEFAULT_ORDER if n in installed]
        names += sorted(n for n in installed if n not in DEFAULT_ORDER)
    if not names:
        print("no backend installed: pip install 'nucleuseg[torch]' (or keras, flax)")
        return 2

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas_env = {
        k: os.environ[k] for k in sorted(os.environ) if k.startswith(("OPENBLAS", "OMP_", "MKL"))
    }
    print(
        f"# {cpu_summary()} ({cores} cores usable), python {platform.python_version()}, "
        f"numpy {np.__version__}, env {blas_env or '{}'}"
    )
    matmul = numpy_matmul_gflops()
    flops = conv_flops(preset.network, args.crop, args.crop)
    print(f"# numpy float32 2048x2048 matmul: {matmul:.0f} GFLOP/s")
    print(
        f"# preset {preset.name!r}: crop {args.crop}, batch {args.batch}, "
        f"{flops / 1e9:.2f} GFLOP per image forward (x3 per training step)\n"
    )

    rows = []
    contended = []
    builtin = builtin_backends()
    for name in names:
        print(f"# {name} ...", file=sys.stderr, flush=True)
        trains = name not in builtin or builtin[name].trains
        if not trains and args.no_inference:
            continue
        train = (
            _train(name, preset, args.crop, args.batch, args.steps, args.warmup) if trains else {}
        )
        gc.collect()
        if trains and args.loop:
            train["loop"] = _loop(name, preset, args.crop, args.batch, args.steps, args.warmup)
            gc.collect()
        infer = {} if args.no_inference else _infer(name, preset, args.inference_repeats)
        gc.collect()
        rows.append((name, train, infer))
        if args.contention:
            with one_core_busy():
                busy_train = (
                    _train(name, preset, args.crop, args.batch, args.steps, args.warmup)
                    if trains
                    else {}
                )
                gc.collect()
                busy_infer = (
                    {} if args.no_inference else _infer(name, preset, args.inference_repeats)
                )
                gc.collect()
            contended.append((name, train, busy_train, infer, busy_infer))

    if not rows:
        print("nothing to measure: the backends given only predict, and --no-inference is set")
        return 2
    fastest = max((r[1]["images_per_s"] for r in rows if r[1]), default=1.0)
    reference = rows[0][2]
    sizes = [f"{h}x{w}" for h, w in INFERENCE_SIZES]
    header = [
        "backend",
        "framework",
        "first step s",
        "train img/s",
        "vs fastest",
        "GFLOP/s",
        "of matmul",
    ]
    if not args.no_inference:
        header += [f"predict {s} MP/s (vs {rows[0][0]})" for s in sizes]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for name, train, infer in rows:
        cells = [name, _version(name)]
        if train:
            cells += [
                f"{train['first_step_s']:.1f}",
                f"{train['images_per_s']:.1f} (best {train['best_images_per_s']:.1f})",
                f"{fastest / train['images_per_s']:.2f}x",
                f"{train['gflops']:.0f}",
                f"{train['gflops'] / matmul:.0%}",
            ]
        else:
            cells += ["-", "does not train", "-", "-", "-"]
        cells += [f"{infer[s]:.2f} ({infer[s] / reference[s]:.2f}x)" for s in sizes if s in infer]
        print("| " + " | ".join(cells) + " |")
    looped = [(name, train) for name, train, _ in rows if train and "loop" in train]
    if looped:
        print(f"\n# {args.steps} steps inside nucleuseg.training.train against the bare step")
        print("| backend | loop steps/min | loop img/s | bare img/s | loop / bare |")
        print("|---|---|---|---|---|")
        for name, train in looped:
            loop = train["loop"]
            print(
                f"| {name} | {loop['steps_per_min']:.0f} | {loop['images_per_s']:.1f} | "
                f"{train['images_per_s']:.1f} | {loop['images_per_s'] / train['images_per_s']:.0%} |"
            )
    if contended:
        print("\n# with a second process burning one core: share of the idle throughput kept")
        header = ["backend", "train img/s idle -> busy", "kept"]
        header += [f"predict {s} MP/s idle -> busy" for s in sizes] if not args.no_inference else []
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for name, idle, busy, infer_idle, infer_busy in contended:
            cells = [name]
            if idle:
                a, b = idle["images_per_s"], busy["images_per_s"]
                cells += [f"{a:.1f} -> {b:.1f}", f"{b / a:.0%}"]
            else:
                cells += ["does not train", "-"]
            cells += [
                f"{infer_idle[s]:.2f} -> {infer_busy[s]:.2f} ({infer_busy[s] / infer_idle[s]:.0%})"
                for s in sizes
                if s in infer_idle
            ]
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
