"""The ``nucleuseg`` command line.

``nucleuseg demo`` segments built-in sample images with a shipped model and scores them (no
download, no arguments; ``--train`` trains a small U-Net instead). ``train``, ``evaluate``,
``tune``, ``predict``, ``submit`` and ``score`` cover the DSB 2018 workflow on real folders;
``search`` runs a hyperparameter search, ``export`` writes ONNX or a bioimage.io package,
``average`` averages the weights of fine-tuned models, ``models`` lists the shipped models and
``backends`` the frameworks found. ``nucleuseg COMMAND --help`` documents each.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from nucleuseg.errors import (
    CSVFormatError,
    InputError,
    MaskOverlapError,
    NucleusegError,
    RLEError,
)
from nucleuseg.models import DEFAULT_MODEL

DEFAULT_VAL_FRACTION = 0.15


def _add_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULT_VAL_FRACTION,
        help="share of the folder held out for validation, stratified by kind and size "
        f"(default {DEFAULT_VAL_FRACTION})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training")


def _add_data(parser: argparse.ArgumentParser, required: bool = True) -> None:
    from nucleuseg.data.formats import list_formats

    parser.add_argument(
        "--data",
        required=required,
        help="a dataset folder, its format found from its layout: DSB-style "
        "(<id>/images/<id>.png [+ masks/]) or images/ with labels/ of the same names; relative "
        "names are also looked up under $NUCLEUSEG_DSB",
    )
    parser.add_argument(
        "--format",
        choices=list_formats(),
        help="read --data in this format instead of finding it from the layout",
    )


def _device(text: str) -> str | int:
    """``--device``: a device spec (checked here, so a bad one is a usage error)."""
    from nucleuseg.backends.device import parse_device
    from nucleuseg.errors import ConfigError

    spec: str | int = int(text) if text.isdigit() else text
    try:
        parse_device(spec)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=_device,
        help="where the network runs: cpu, gpu, gpu:N (also cuda, cuda:N) or a GPU number N "
        "(default: a GPU when the framework sees one, else the CPU)",
    )


def _add_model(parser: argparse.ArgumentParser, tta: bool = True) -> None:
    """The model a command runs: the file, the backend to run it on, the device, flip TTA."""
    parser.add_argument(
        "model",
        help="model file (.safetensors) or the name of a shipped model (see nucleuseg models)",
    )
    parser.add_argument(
        "--backend",
        help="backend to run the model on (default: the one that trained it; for a shipped "
        "model the first installed)",
    )
    _add_device(parser)
    if tta:
        parser.add_argument("--tta", action="store_true", help="average over flips")


def _add_training_backend(parser: argparse.ArgumentParser) -> None:
    """``--backend`` of the commands that train: the first built-in backend by default."""
    from nucleuseg.backends import builtin_backends

    backends = [name for name, backend in builtin_backends().items() if backend.trains]
    parser.add_argument(
        "--backend",
        default=backends[0],
        help=f"{', '.join(backends)} or another registered backend (default {backends[0]})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nucleuseg",
        description="Find every cell nucleus in microscopy images (DSB 2018 U-Nets in Keras, "
        "PyTorch and Flax).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="segment built-in sample images with the shipped model (--train: train a small one)",
    )
    demo.add_argument("--backend", help="backend to use (default: the first installed)")
    _add_device(demo)
    demo.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"shipped model or model file (default {DEFAULT_MODEL})",
    )
    demo.add_argument(
        "--train",
        action="store_true",
        help="instead, train a small model on synthetic nuclei and score it",
    )
    demo.add_argument(
        "--minutes", type=float, default=2.0, help="with --train: training budget (default 2)"
    )
    demo.add_argument(
        "--out", default="nucleuseg-demo", help="output folder (default nucleuseg-demo)"
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="with --train: seed of the data and training (default 0)",
    )

    tr = sub.add_parser("train", help="train a model on a labelled dataset folder")
    _add_training_backend(tr)
    _add_device(tr)
    _add_data(tr)
    tr.add_argument("--out", required=True, help="model file to write (.safetensors)")
    tr.add_argument(
        "--preset",
        help="default, seed or a preset .json file (as search writes) (default: default, or "
        "with --init the model's own)",
    )
    tr.add_argument(
        "--init",
        metavar="MODEL",
        help="fine-tune: start from this model (file or shipped name), its weights, network and "
        "inference settings; the recipe is --preset's (same network) or the model's own",
    )
    tr.add_argument("--epochs", type=int, default=200, help="maximum epochs (default 200)")
    tr.add_argument("--minutes", type=float, default=None, help="wall-clock budget in minutes")
    tr.add_argument("--resume", help="training-state file: written each epoch, resumed if present")
    tr.add_argument("--figures", help="folder for the training-curve figure")
    _add_split(tr)

    ev = sub.add_parser("evaluate", help="DSB score of a model on a labelled folder")
    _add_model(ev)
    _add_data(ev)
    ev.add_argument(
        "--split",
        choices=("all", "val", "train"),
        default="val",
        help="evaluate the whole folder or one side of the --val-fraction split (default val)",
    )
    ev.add_argument("--figures", help="folder for figures of the best and worst images")
    _add_split(ev)

    tu = sub.add_parser(
        "tune", help="choose post-processing thresholds on the validation split, save them"
    )
    _add_model(tu, tta=False)
    _add_data(tu)
    tu.add_argument("--out", help="model file to write (default: update MODEL in place)")
    _add_split(tu)

    pr = sub.add_parser(
        "predict",
        help="segment and measure images: label images, overlays, a table of nuclei",
        description="Segment image files (PNG, TIFF incl. 16-bit and multi-channel, JPEG), "
        "folders of them and glob patterns. Writes OUT/<stem>_labels.png (16-bit; .tif, 32-bit, "
        "beyond 65,535 nuclei), with --overlay OUT/<stem>_overlay.png, and for the run "
        "OUT/measurements.csv (one row per nucleus) and OUT/summary.csv (one row per image). "
        "A file that fails gets its error and the rest goes on; the exit status is then 1.",
    )
    _add_model(pr)
    pr.add_argument(
        "images",
        nargs="+",
        help="image files, folders (their image files) and glob patterns such as 'data/*.tif' "
        "(with --blocks: one large image or zarr folder each)",
    )
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument(
        "--channel",
        type=_channel,
        metavar="N",
        help="nuclear-stain channel (0-based) of multi-channel images, given to the model as "
        "gray; intensities are measured on it (default: the image as it is, gray or RGB)",
    )
    pr.add_argument(
        "--diameter",
        type=_diameter,
        metavar="PX",
        help="typical nucleus diameter in pixels, where it differs from the model's native "
        "diameter (2 x target_radius, printed at the start): images are resized by native/PX "
        "and the labels back",
    )
    pr.add_argument(
        "--overlay", action="store_true", help="also write <stem>_overlay.png: outlines on images"
    )
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.add_argument(
        "--blocks",
        action="store_true",
        help="images larger than memory (TIFF/BigTIFF, zarr, OME-Zarr): predict in blocks, write "
        "OUT/NAME/labels.zarr and nuclei.csv; a rerun finishes an interrupted one",
    )
    pr.add_argument(
        "--block-size",
        type=int,
        help="block side (default 512, or the network tile less two halos where smaller)",
    )
    pr.add_argument("--halo", type=int, default=64, help="context around a block (default 64)")
    pr.add_argument(
        "--workers",
        type=int,
        nargs="?",
        const=0,
        metavar="N",
        help="spread the images over a local Dask cluster of N worker processes, one thread "
        "each (without N: one per usable core; extra large)",
    )
    pr.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="spread the images over the workers of an existing Dask cluster (tcp://host:8786); "
        "they must see the model, images and --out at the same paths",
    )

    sm = sub.add_parser("submit", help="Kaggle submission CSV for a folder of images")
    _add_model(sm)
    _add_data(sm)
    sm.add_argument("--out", required=True, help="CSV to write")

    sc = sub.add_parser("score", help="score a submission CSV against a solution CSV")
    sc.add_argument("submission", help="ImageId,EncodedPixels CSV")
    sc.add_argument("solution", help="ImageId,EncodedPixels,Height,Width[,Usage] CSV")

    se = sub.add_parser(
        "search", help="search the network and recipe that score best (Optuna; extra search)"
    )
    _add_training_backend(se)
    _add_device(se)
    _add_data(se)
    se.add_argument("--out", required=True, help="folder for best.json, trials.csv, figures")
    se.add_argument("--trials", type=int, default=20, help="trials this worker runs (default 20)")
    budget = se.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes-per-trial", type=float, help="training minutes of a trial (default 5)"
    )
    budget.add_argument("--steps-per-trial", type=int, help="optimizer steps of a trial instead")
    se.add_argument(
        "--preset",
        default="default",
        help="preset whose other settings the trials keep: default, seed or a .json file",
    )
    se.add_argument(
        "--space",
        help="search space as a JSON file of 'section.field' choices and ranges (default: the "
        "built-in space, see docs)",
    )
    se.add_argument("--study", default="nucleuseg", help="study name (default nucleuseg)")
    se.add_argument(
        "--storage",
        help="shared study: an SQLAlchemy URL (sqlite:///study.db) or a journal file (.log, "
        ".jsonl); workers on one storage share trials, a rerun continues (default: in memory)",
    )
    se.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="stops unpromising trials early (default median)",
    )
    se.add_argument(
        "--no-base-trial",
        action="store_true",
        help="do not queue the --preset itself as a trial (by default a study scores it once, "
        "under the same budget, to compare the trials with)",
    )
    _add_split(se)

    ex = sub.add_parser(
        "export",
        help="write a model as a file other tools run (ONNX; a bioimage.io package)",
    )
    ex.add_argument("model", help="model file (.safetensors) or the name of a shipped model")
    ex.add_argument(
        "--format", choices=("onnx", "bioimageio"), default="onnx", help="(default onnx)"
    )
    ex.add_argument("--out", required=True, help="file to write (.onnx, or .zip for bioimageio)")
    ex.add_argument(
        "--polarity",
        choices=("bright", "dark"),
        default="bright",
        help="bioimageio: nuclei brighter (fluorescence) or darker (brightfield, H&E, inverted) "
        "than the background (default bright)",
    )

    av = sub.add_parser(
        "average",
        help="average the weights of models of one network (fine-tunings from a common start)",
    )
    av.add_argument("models", nargs="+", help="two or more model files or shipped models' names")
    av.add_argument(
        "--weights",
        type=float,
        nargs="+",
        help="one weight per model, non-negative, summing to 1 (default: equal)",
    )
    av.add_argument("--out", required=True, help="model file to write (.safetensors)")

    mo = sub.add_parser("models", help="list the shipped pretrained models, or print one's card")
    mo.add_argument("name", nargs="?", help="a shipped model: print its model card")

    sub.add_parser("backends", help="list backends and framework versions")
    return parser


def _load_segmenter(args):
    from nucleuseg.models import is_shipped, pretrained, resolve_model
    from nucleuseg.segmenter import Segmenter

    if is_shipped(args.model):  # an existing file of the same name would win
        seg = pretrained(args.model, backend=args.backend, device=args.device)
    else:
        path = resolve_model(args.model)  # a missing file's error lists the shipped names
        seg = Segmenter.load(path, backend=args.backend, device=args.device)
    if getattr(args, "tta", False):
        seg.inference = seg.inference.replace(tta=True)
    return seg


def _split(args):
    from nucleuseg.data import load_dataset

    dataset = load_dataset(args.data, format=args.format)
    train, val = dataset.split(args.val_fraction, seed=args.seed)
    return dataset, train, val


def _output_file(path: str, option: str) -> None:
    """Check, before any long work, that ``path`` can be written: its folder exists and it is
    not a folder itself."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise InputError(f"{option} {path}: folder {target.parent} does not exist")


def _output_folder(path: str, option: str) -> None:
    """Check, before any long work, that ``path`` is a folder or can be made one."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(f"{option} {path}: exists and is not a folder")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is not a folder")


def _cmd_models(args) -> int:
    from nucleuseg import models

    if args.name:
        print(models.card_markdown(models.get_model(args.name)), end="")
        return 0
    infos = models.list_models()
    if not infos:
        print("no shipped models")
        return 0
    width = max(len(info.name) for info in infos)
    kinds = max(len(", ".join(info.kinds)) for info in infos)
    print(f"{'name':<{width}}  {'kinds':<{kinds}}  DSB score  description")
    for info in infos:
        print(
            f"{info.name:<{width}}  {', '.join(info.kinds):<{kinds}}  {info.dsb_score:9.4f}  "
            f"{info.description}"
        )
    return 0


def _cmd_backends(args) -> int:
    from nucleuseg.backends import available_backends

    for info in available_backends():
        print(info)
    return 0


def _training_start(args):
    """The preset ``train`` uses and, with ``--init``, the model file it starts from: the
    model's network and inference settings, the recipe of ``--preset`` or else the model's.
    A recipe with ``training.target_radius`` turns on the inference's ``auto_scale`` at that
    radius, as its crops were zoomed."""
    from nucleuseg import checkpoint
    from nucleuseg.config import get_preset
    from nucleuseg.models import resolve_model

    if not args.init:
        return get_preset(args.preset or "default"), None
    model = checkpoint.load_model(resolve_model(args.init))
    if args.preset is None:
        return model.preset, model
    chosen = get_preset(args.preset)
    if chosen.network != model.preset.network:
        ours, theirs = chosen.network.to_dict(), model.preset.network.to_dict()
        differ = ", ".join(f"{k} {ours[k]} vs {theirs[k]}" for k in ours if ours[k] != theirs[k])
        raise InputError(
            f"--preset {args.preset}: its network differs from that of --init {args.init} "
            f"({differ}); fine-tuning keeps the model's network: leave out --preset or give one "
            "with the same network"
        )
    inference = model.preset.inference
    if chosen.training.target_radius is not None:
        # Crops zoomed towards a nucleus radius: predict (and validate) zoomed the same way.
        inference = inference.replace(auto_scale=True, target_radius=chosen.training.target_radius)
    return model.preset.replace(training=chosen.training, inference=inference), model


def _cmd_train(args) -> int:
    from nucleuseg.segmenter import Segmenter

    _output_file(args.out, "--out")
    if args.resume:
        _output_file(args.resume, "--resume")
    if args.figures:
        _output_folder(args.figures, "--figures")
    preset, init = _training_start(args)
    _, train, val = _split(args)
    start = f", from {args.init}" if init is not None else ""
    print(
        f"training on {len(train)} images, validating on {len(val)} "
        f"({args.backend}, {preset.name}{start})"
    )
    seg = Segmenter(args.backend, preset=preset, seed=args.seed, device=args.device)
    if init is not None:
        seg.set_weights(init.weights)
    started = time.perf_counter()
    history = seg.fit(
        train, validation=val, epochs=args.epochs, max_minutes=args.minutes, resume=args.resume
    )
    print(history)
    print(
        f"trained in {(time.perf_counter() - started) / 60:.1f} min; best validation score "
        f"{history.best_score:.4f}"
        if history.best_score is not None
        else ""
    )
    seg.save(args.out)
    print(f"wrote {args.out}")
    if args.figures:
        from nucleuseg import viz

        Path(args.figures).mkdir(parents=True, exist_ok=True)
        viz.save_figure(viz.plot_history(history), Path(args.figures) / "training.png")
    return 0


def _cmd_evaluate(args) -> int:
    if args.figures:
        _output_folder(args.figures, "--figures")
    dataset, train, val = _split(args)
    subset = {"all": dataset, "train": train, "val": val}[args.split]
    seg = _load_segmenter(args)
    started = time.perf_counter()
    preds = seg.predict_many(subset)
    seconds = time.perf_counter() - started
    from nucleuseg import metrics

    truths = {s.image_id: s.labels for s in subset}
    result = metrics.score_dataset(truths, preds)
    megapixels = sum(t.size for t in truths.values()) / 1e6
    print(f"{args.split} part of {args.data}: {len(subset)} images, {megapixels:.1f} megapixels")
    print(result.table())
    print(f"DSB score {result.score:.4f}   AP@0.5 {result.ap50:.4f}")
    for kind, score in sorted(result.by_kind(subset.kinds()).items()):
        print(f"  {kind:<13} {score:.4f}")
    print(f"prediction: {seconds:.1f} s, {megapixels / seconds:.2f} megapixels/s ({seg.backend})")
    if args.figures:
        from nucleuseg import viz

        viz.save_extremes(subset, preds, result, args.figures)
        print(f"figures in {args.figures}")
    return 0


def _cmd_tune(args) -> int:
    from nucleuseg.models import DIRECTORY, is_shipped

    if args.out is None and is_shipped(args.model):
        raise InputError(
            f"{args.model} is a shipped model, which tune never changes: give --out FILE for "
            "the tuned copy"
        )
    if Path(args.out or args.model).resolve().parent == DIRECTORY:
        raise InputError(
            f"--out {args.out or args.model}: in the folder of the shipped models; write the "
            "tuned model elsewhere"
        )
    _output_file(args.out or args.model, "--out")
    _, _, val = _split(args)
    seg = _load_segmenter(args)
    before = seg.inference
    result = seg.tune(val)
    print(result.table())
    print(
        f"chose threshold {result.best.threshold}, seed_threshold {result.best.seed_threshold}, "
        f"min_size {result.best.min_size} (was {before.threshold}, {before.seed_threshold}, "
        f"{before.min_size}): validation DSB score {result.best_score:.4f}"
    )
    out = args.out or args.model
    seg.save(out)
    print(f"wrote {out}")
    return 0


def _channel(text: str) -> int:
    """``--channel``: a channel number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a channel number (0, 1, ...), not {text!r}")
    return int(text)


def _diameter(text: str) -> float:
    """``--diameter``: a positive number of pixels."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"a positive number of pixels, not {text!r}")
    return value


def _cmd_predict(args) -> int:
    from nucleuseg.batch import segment_files

    _output_folder(args.out, "--out")
    if args.blocks:
        options = {"--channel": args.channel, "--diameter": args.diameter}
        given = [name for name, value in options.items() if value is not None]
        given += ["--overlay"] if args.overlay else []
        given += [n for n in ("--workers", "--scheduler") if getattr(args, n[2:]) is not None]
        if given:
            raise InputError(f"--blocks does not take {', '.join(given)}")
    if args.workers is not None or args.scheduler is not None:
        return _predict_distributed(args)
    seg = _load_segmenter(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.blocks:
        for name in args.images:
            folder = out / Path(name).name.split(".")[0]
            result = seg.predict_blocks(name, folder, block=args.block_size, halo=args.halo)
            print(f"{name}: {result.nuclei} nuclei -> {result.labels}, {result.table}")
        return 0
    _print_native_diameter(args, seg.inference)
    report = segment_files(
        seg,
        args.images,
        out,
        overlay=args.overlay,
        channel=args.channel,
        diameter=args.diameter,
        progress=not args.no_progress,
        on_image=_show_image,
    )
    return _report_batch(report)


def _print_native_diameter(args, inference) -> None:
    from nucleuseg.inference import diameter_factor

    native = 2 * inference.target_radius
    scale = ""
    if args.diameter is not None:
        scale = f"; --diameter {args.diameter:g}: images resized by "
        scale += f"{diameter_factor(args.diameter, inference):.3g}"
    print(f"model's native nucleus diameter: {native:g} pixels{scale}")


def _show_image(result) -> None:
    from tqdm.auto import tqdm  # writes above the progress bar

    if result.ok:
        tqdm.write(f"{result.path}: {result.nuclei} nuclei -> {result.labels}", sys.stdout)
    else:
        tqdm.write(f"{result.path}: error: {result.error}", sys.stderr)


def _report_batch(report) -> int:
    done = len(report.images) - len(report.failures)
    print(
        f"{done} images, {report.nuclei} nuclei: wrote {report.measurements} and {report.summary}"
    )
    if report.failures:
        print(f"{len(report.failures)} failed:", file=sys.stderr)
        for result in report.failures:
            print(f"  {result.path}: {result.error}", file=sys.stderr)
        return 1
    return 0


def _predict_distributed(args) -> int:
    """``predict --workers N`` / ``--scheduler ADDRESS``: the images on Dask workers."""
    from nucleuseg import checkpoint
    from nucleuseg.distributed import segment_files_distributed
    from nucleuseg.models import resolve_model

    if args.workers is not None and args.scheduler is not None:
        raise InputError("--workers sizes a local cluster: not with --scheduler")
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be a positive number of processes, got {args.workers}")
    _print_native_diameter(args, checkpoint.load_model(resolve_model(args.model)).preset.inference)
    if args.scheduler is None:
        from nucleuseg.backends.threads import usable_cores

        args.workers = args.workers or usable_cores()  # --workers without N
    where = f"the cluster at {args.scheduler}" if args.scheduler else f"{args.workers} workers"
    print(f"segmenting on {where}")
    report = segment_files_distributed(
        args.model,
        args.images,
        args.out,
        scheduler=args.scheduler,
        workers=args.workers,
        backend=args.backend,
        device=args.device,
        tta=getattr(args, "tta", False),
        overlay=args.overlay,
        channel=args.channel,
        diameter=args.diameter,
        progress=not args.no_progress,
        on_image=_show_image,
    )
    return _report_batch(report)


def _cmd_submit(args) -> int:
    from nucleuseg import rle
    from nucleuseg.data import load_dataset

    _output_file(args.out, "--out")
    dataset = load_dataset(args.data, format=args.format, labels=False)
    seg = _load_segmenter(args)
    preds = seg.predict_many(dataset)
    rle.write_submission(preds, args.out)
    print(
        f"wrote {args.out}: {len(preds)} images, {sum(int(p.max()) for p in preds.values())} nuclei"
    )
    return 0


def _cmd_score(args) -> int:
    from nucleuseg import metrics, rle

    solution = rle.read_rle_csv(args.solution)
    submission = rle.read_rle_csv(args.submission)
    missing = sorted(set(solution) - set(submission))
    extra = sorted(set(submission) - set(solution))
    if extra:
        raise CSVFormatError(f"{args.submission}: images not in the solution: {extra[:5]}")
    truths, preds = {}, {}
    for image_id, entry in solution.items():
        if entry.shape is None:
            raise CSVFormatError(f"{args.solution}: no Height/Width for {image_id}")
        guess = submission.get(image_id, rle.RLEImage(rles=()))
        for source, labels, decoded, policy in (
            (args.solution, truths, entry, "error"),
            (args.submission, preds, guess, "first"),
        ):
            try:
                labels[image_id] = rle.labels_from_csv(decoded, entry.shape, overlap=policy)
            except (RLEError, MaskOverlapError) as err:
                raise type(err)(f"{source}: image {image_id}: {err}") from None
    if missing:
        print(
            f"warning: {len(missing)} images have no rows in the submission (scored as empty)",
            file=sys.stderr,
        )
    result = metrics.score_dataset(truths, preds)
    print(result.table())
    print(f"DSB score {result.score:.4f}")
    return 0


def _cmd_search(args) -> int:
    from nucleuseg.config import get_preset
    from nucleuseg.search import open_storage, read_space, search, write_results

    _output_folder(args.out, "--out")
    base = get_preset(args.preset)  # a bad preset, space or storage fails before the data is read
    space = read_space(args.space, base) if args.space else None
    open_storage(args.storage)
    _, train, val = _split(args)
    minutes = args.minutes_per_trial
    if minutes is None and args.steps_per_trial is None:
        minutes = 5.0
    budget = f"{minutes} min" if minutes is not None else f"{args.steps_per_trial} steps"
    print(
        f"searching {args.trials} trials of {budget} ({args.backend}, study {args.study}): "
        f"training on {len(train)} images, validating on {len(val)}"
    )
    result = search(
        train,
        val,
        args.backend,
        trials=args.trials,
        minutes_per_trial=minutes,
        steps_per_trial=args.steps_per_trial,
        space=space,
        base=base,
        study_name=args.study,
        storage=args.storage,
        pruner=args.pruner,
        seed=args.seed,
        device=args.device,
        base_first=not args.no_base_trial,
    )
    print(result.table())
    for path in write_results(result, args.out):
        print(f"wrote {path}")
    if result.best is None:
        print("no trial has completed yet: no best preset")
    return 0


def _cmd_export(args) -> int:
    from nucleuseg.export import export_model

    _output_file(args.out, "--out")
    args.backend, args.device = "onnx", "cpu"  # the weights are canonical: no framework needed
    if args.format == "bioimageio":  # a shipped model's name brings its model card along
        path = export_model(args.model, args.out, format=args.format, polarity=args.polarity)
    else:
        path = export_model(_load_segmenter(args), args.out, format=args.format)
    print(f"{args.model} -> {path} ({args.format})")
    return 0


def _cmd_average(args) -> int:
    from nucleuseg.averaging import average_models
    from nucleuseg.checkpoint import save_model

    _output_file(args.out, "--out")
    model = average_models(args.models, args.weights)
    save_model(args.out, model.weights, model.preset, model.backend)
    weights = args.weights or [1 / len(args.models)] * len(args.models)
    terms = " + ".join(f"{w:g} x {m}" for w, m in zip(weights, args.models, strict=True))
    print(f"{terms} -> {args.out}")
    return 0


def _cmd_demo(args) -> int:
    from nucleuseg.backends import default_backend
    from nucleuseg.demo import run_demo, run_pretrained_demo

    _output_folder(args.out, "--out")
    if not args.train:
        run_pretrained_demo(args.model, args.backend, Path(args.out), device=args.device)
        return 0
    backend = args.backend or default_backend(trains=True)
    run_demo(backend, args.minutes, Path(args.out), args.seed, device=args.device)
    return 0


COMMANDS = {
    "backends": _cmd_backends,
    "models": _cmd_models,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "tune": _cmd_tune,
    "predict": _cmd_predict,
    "submit": _cmd_submit,
    "score": _cmd_score,
    "demo": _cmd_demo,
    "search": _cmd_search,
    "export": _cmd_export,
    "average": _cmd_average,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nucleuseg`` command; returns the exit status.

    While a command runs, the library's ``INFO`` messages (the line of each training epoch, the
    demo's report) are shown on standard output as plain lines.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from nucleuseg import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 0
    logger = logging.getLogger("nucleuseg")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except NucleusegError as exc:
        print(f"nucleuseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file the command itself writes (an output folder that is a file, a full disk, ...).
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"nucleuseg {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
