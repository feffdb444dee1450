"""Synthetic nuclei: images with exact instance labels, made on demand from a seed.

The generator is the library's built-in data. It draws fluorescence-like (bright nuclei on a dark
background), brightfield-like (dark nuclei inside pale cells on a bright background) and
H&E-like (dark purple nuclei in pink/purple tissue) images in the spirit of DSB 2018:

- nuclei are random ellipses whose outline is perturbed by low-frequency radial noise, with a
  nucleus radius of about 3 to 25 pixels from image to image and a moderate spread within one;
- densities range from a few scattered nuclei to crowded clusters where nuclei touch and overlap
  (the nucleus on top owns the shared pixels; labels are exact);
- intensity varies between nuclei and within them (chromatin texture, nucleoli, brighter or
  darker rims); the background is uneven; the image is blurred and carries Poisson and Gaussian
  noise; fluorescence can be very dim or saturated, and sometimes carries unlabelled clutter
  (faint cytoplasm, thin curvy fibres) so that a model learns to leave such things out;
- H&E colour comes from a Beer-Lambert stain-mixing model with hematoxylin and eosin;
- the ``"tissue"`` generator kind draws dense H&E tissue as in 20x-40x pathology tiles: touching,
  textured purple nuclei (with some small dark lymphocytes) packed in sheets, in pink fibrous
  stroma with paler cytoplasm around the nuclei and white lumen regions, and no bright background
  anywhere else. Its samples have the DSB kind ``"histology"``.

Each nucleus is rasterised inside its own bounding box (in batches of boxes of one size), so the
cost grows with the area the nuclei cover, not with their number times the image area.

Examples
--------
>>> from nucleuseg.data.synthetic import make_synthetic, synthetic_sample
>>> s = synthetic_sample(seed=1, size=(48, 64), kind="histology")
>>> s.image.shape, s.image.dtype, s.labels.dtype, s.kind
((48, 64, 3), dtype('uint8'), dtype('int32'), 'histology')
>>> ds = make_synthetic(3, size=32, seed=0, kinds=["brightfield"])
>>> ds.ids, sorted(set(ds.kinds().values()))
(['synthetic-0000', 'synthetic-0001', 'synthetic-0002'], ['brightfield'])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from nucleuseg.data.base import KINDS, Dataset, Sample
from nucleuseg.errors import InputError

KIND_WEIGHTS = {"fluorescence": 0.65, "histology": 0.2, "brightfield": 0.15}
"""Share of each image kind when none is asked for, roughly as in DSB 2018 stage 1."""

GENERATOR_KINDS = (*KINDS, "tissue")
"""What the generator can draw: the DSB kinds, and ``"tissue"``, dense H&E tissue whose samples
have the kind ``"histology"``. ``"tissue"`` is drawn only when asked for by name."""

MIN_SIZE = 8
"""Smallest image side the generator accepts."""

_KIND_STREAM = 0x6B696E64  # separates the kind draw from the pixel draws of the same seed
_CACHE_BYTES = 256 * 2**20  # memory a lazy synthetic dataset may keep for generated samples
_CHUNK = 96  # nuclei rasterised together in one batch of equal-sized boxes

# Stain optical-density vectors (RGB) of hematoxylin and eosin (Ruifrok & Johnston, 2001).
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])


# --------------------------------------------------------------------------------------------
# argument checks and seeds


def _parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """The ``(height, width)`` that a ``size`` argument (an int or a pair of ints) asks for."""
    if isinstance(size, int | np.integer) and not isinstance(size, bool):
        shape = (int(size), int(size))
    elif (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
    ):
        shape = (int(size[0]), int(size[1]))
    else:
        raise InputError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    if min(shape) < MIN_SIZE:
        raise InputError(f"size must be at least {MIN_SIZE} pixels on each side, got {shape}")
    return shape


def _check_seed(seed: int, name: str = "seed") -> int:
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"{name} must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_kind(kind: str, name: str = "kind") -> str:
    if kind not in GENERATOR_KINDS:
        raise InputError(f"{name} must be one of {GENERATOR_KINDS}, got {kind!r}")
    return kind


def _dsb_kind(kind: str) -> str:
    """The DSB kind (one of ``KINDS``) of a generator kind's samples."""
    return "histology" if kind == "tissue" else kind


def _pick_kind(seed: int, kinds: Sequence[str] | None = None) -> str:
    """The kind of image drawn for ``seed``: DSB-like weights, or uniform over ``kinds``."""
    rng = np.random.default_rng([seed, _KIND_STREAM])
    if kinds is None:
        names = list(KIND_WEIGHTS)
        weights = np.array([KIND_WEIGHTS[k] for k in names])
        return names[int(rng.choice(len(names), p=weights / weights.sum()))]
    return kinds[int(rng.integers(len(kinds)))]


def _child_seed(seed: int, index: int) -> int:
    """Seed of image ``index`` of a dataset made with ``seed`` (independent of its length)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


# --------------------------------------------------------------------------------------------
# random fields


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-correlated noise with zero mean and unit standard deviation.

    Large correlation lengths are drawn on a coarse grid and resized, which keeps the cost
    independent of ``sigma``.
    """
    step = max(1, int(sigma // 3))
    small = (max(2, -(-shape[0] // step) + 1), max(2, -(-shape[1] // step) + 1))
    field = ndimage.gaussian_filter(rng.standard_normal(small), sigma / step, mode="wrap")
    if step > 1:
        field = ndimage.zoom(field, step, order=1, mode="nearest")
    field = field[: shape[0], : shape[1]]
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def _spots(rng: np.random.Generator, shape: tuple[int, int], per_pixel: float, sigma: float):
    """Sparse blurred dots in ``[0, 1]`` (nucleoli, chromocentres)."""
    dots = (rng.random(shape) < per_pixel).astype(np.float64)
    blurred = ndimage.gaussian_filter(dots, sigma)
    peak = blurred.max()
    return blurred / peak if peak > 0 else blurred


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


# --------------------------------------------------------------------------------------------
# layout: where the nuclei are, how big and what shape


def _greedy_hard_core(count: int, pairs: np.ndarray) -> np.ndarray:
    """Keep candidates in index order, dropping any that conflicts with an earlier kept one.

    The sequential greedy rule is evaluated in rounds over all conflict pairs at once: a
    candidate is dropped as soon as an earlier neighbour is kept, and kept once every earlier
    neighbour is dropped. Each round settles at least the first undecided candidate.
    """
    status = np.zeros(count, np.int8)  # 0 undecided, 1 kept, -1 dropped
    first, second = pairs[:, 0], pairs[:, 1]
    while (undecided := status == 0).any():
        before = status[first]
        blocked = np.bincount(second[before == 1], minlength=count) > 0
        waiting = np.bincount(second[before == 0], minlength=count) > 0
        status[undecided & blocked] = -1
        status[undecided & ~blocked & ~waiting] = 1
    return status == 1


def _layout(rng: np.random.Generator, shape: tuple[int, int], p: dict) -> dict:
    """Centres, semi-axes, angles and outline harmonics of the nuclei of one image."""
    h, w = shape
    r0 = min(p["radius"], min(h, w) / 6.0)
    n_target = int(np.clip(round(p["coverage"] * h * w / (math.pi * r0**2)), 1, 6000))
    m = 3 * n_target + 8

    # Candidate centres: uniform, or gathered around a few cluster centres.
    centres = rng.uniform((0, 0), (h, w), size=(m, 2))
    if p["clusters"]:
        k = int(rng.integers(1, 6))
        hubs = rng.uniform((0, 0), (h, w), size=(k, 2))
        spread = r0 * math.sqrt(n_target / k) * rng.uniform(0.7, 1.3, size=k)
        which = rng.integers(k, size=m)
        clustered = rng.random(m) < 0.85
        around = hubs[which] + rng.standard_normal((m, 2)) * spread[which, None]
        centres[clustered] = around[clustered]
        centres = np.clip(centres, 0, (h - 1e-6, w - 1e-6))

    radius = r0 * np.clip(np.exp(rng.normal(0.0, p["radius_spread"], m)), 0.55, 1.8)
    small = rng.random(m) < p["compact_share"]  # compact, bright (mitotic/apoptotic) nuclei
    radius[small] *= 0.65
    radius = np.maximum(radius, 2.2)
    elong = np.clip(np.exp(rng.normal(p["elong_log"], p["elong_spread"], m)), 1.0, 4.5)
    a = radius * np.sqrt(elong)
    b = radius / np.sqrt(elong)
    theta = p["angle"] + rng.normal(0.0, p["angle_spread"], m)

    # Low-frequency outline noise: harmonics 2..5 of the polar angle, amplitude falling with order.
    orders = np.arange(2, 6)
    amp = np.abs(rng.normal(0.0, p["roughness"], (m, 4))) / np.sqrt(orders - 1)
    harmonics = amp * np.exp(1j * rng.uniform(0, 2 * math.pi, (m, 4)))

    # Keep a packing where centre distances exceed a fraction of the summed radii.
    reach = 0.5 * (a + b)
    tree = cKDTree(centres)
    pairs = tree.query_pairs(2 * p["packing"] * reach.max(), output_type="ndarray")
    if len(pairs):
        dist = np.linalg.norm(centres[pairs[:, 0]] - centres[pairs[:, 1]], axis=1)
        pairs = pairs[dist < p["packing"] * (reach[pairs[:, 0]] + reach[pairs[:, 1]])]
    keep = np.flatnonzero(_greedy_hard_core(m, pairs.reshape(-1, 2)))[:n_target]
    return {
        "centres": centres[keep],
        "a": a[keep],
        "b": b[keep],
        "theta": theta[keep],
        "harmonics": harmonics[keep],
        "compact": small[keep],
        "r0": r0,
    }


def _open_lumen(rng: np.random.Generator, shape: tuple[int, int], lay: dict, st: dict) -> dict:
    """White lumen regions (a share ``lumen_share`` of the image) with no nucleus inside.

    The soft lumen mask is kept in the layout as ``"lumen"``; nuclei whose centre falls in it
    are dropped, so the nuclei around a lumen line it as an epithelium does.
    """
    field = _smooth_field(rng, shape, st["lumen_scale"] * min(shape))
    if st["lumen_share"] <= 0:
        return lay | {"lumen": np.zeros(shape)}
    edge = np.quantile(field, 1.0 - st["lumen_share"])
    lumen = np.clip(4.0 * (field - edge) + 0.5, 0.0, 1.0)
    rows = lay["centres"][:, 0].astype(int)
    cols = lay["centres"][:, 1].astype(int)
    keep = lumen[rows, cols] < 0.5
    out = {
        key: value[keep] if isinstance(value, np.ndarray) else value for key, value in lay.items()
    }
    return out | {"lumen": lumen}


def _rasterise(shape: tuple[int, int], lay: dict) -> tuple[np.ndarray, ...]:
    """Pixels covered by each nucleus, drawn inside each nucleus's bounding box.

    Returns ``(flat, owner, rho, own_area, full_area)``: the flat index of every covered pixel
    inside the image, the 0-based nucleus it belongs to, its normalised radius in ``[0, 1)``
    (0 at the centre, 1 on the outline), and per nucleus the covered area inside the image and in
    all.
    """
    h, w = shape
    n = len(lay["a"])
    extent = np.ceil(lay["a"] * (1 + np.abs(lay["harmonics"]).sum(1))).astype(int) + 1
    order = np.argsort(extent, kind="stable")
    flats, owners, rhos = [], [], []
    own_area = np.zeros(n, np.int64)
    full_area = np.zeros(n, np.int64)
    for start in range(0, n, _CHUNK):
        idx = order[start : start + _CHUNK]
        half = int(extent[idx].max())
        offsets = np.arange(-half, half + 1)
        cy, cx = lay["centres"][idx, 0], lay["centres"][idx, 1]
        gy = np.floor(cy).astype(np.int64)[:, None] + offsets  # (k, P) pixel rows
        gx = np.floor(cx).astype(np.int64)[:, None] + offsets
        dy = (gy - cy[:, None]).astype(np.float32)[:, :, None]
        dx = (gx - cx[:, None]).astype(np.float32)[:, None, :]
        cos = np.cos(lay["theta"][idx]).astype(np.float32)[:, None, None]
        sin = np.sin(lay["theta"][idx]).astype(np.float32)[:, None, None]
        u = (dx * cos + dy * sin) / lay["a"][idx, None, None].astype(np.float32)
        v = (dy * cos - dx * sin) / lay["b"][idx, None, None].astype(np.float32)
        z = u + 1j * v
        rho = np.abs(z)
        z /= np.maximum(rho, 1e-6)
        c = lay["harmonics"][idx].astype(np.complex64)[:, :, None, None]
        series = z * z * (c[:, 0] + z * (c[:, 1] + z * (c[:, 2] + z * c[:, 3])))
        outline = 1.0 + series.real
        inside = rho < outline
        rows_ok = (gy >= 0) & (gy < h)
        cols_ok = (gx >= 0) & (gx < w)
        valid = inside & rows_ok[:, :, None] & cols_ok[:, None, :]
        full_area[idx] = inside.sum((1, 2))
        own_area[idx] = valid.sum((1, 2))
        flat = gy[:, :, None] * w + gx[:, None, :]
        flats.append(flat[valid])
        owners.append(np.broadcast_to(idx[:, None, None], valid.shape)[valid])
        rhos.append((rho / outline)[valid])
    if not flats:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32), own_area, full_area
    return (
        np.concatenate(flats),
        np.concatenate(owners),
        np.concatenate(rhos),
        own_area,
        full_area,
    )


def _resolve_labels(
    shape: tuple[int, int],
    flat: np.ndarray,
    owner: np.ndarray,
    own_area: np.ndarray,
    full_area: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Label image (later nuclei on top) and which nuclei survive.

    Nuclei mostly hidden under others, or cut down to a sliver by the image border, are removed
    from the image altogether, so every label covers a nucleus one can see.
    """
    n = len(own_area)
    size = shape[0] * shape[1]

    def paint(elements: np.ndarray) -> np.ndarray:
        top = np.zeros(size, np.int64)
        np.maximum.at(top, flat[elements], owner[elements] + 1)
        return top

    top = paint(np.ones(len(flat), bool))
    visible = np.bincount(top, minlength=n + 1)[1:]
    keep = (
        (visible >= 0.55 * own_area) & (own_area >= np.maximum(5, 0.2 * full_area)) & (visible >= 5)
    )
    if not keep.all():
        top = paint(keep[owner])
    new_ids = np.zeros(n + 1, np.int32)
    new_ids[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_ids[top].reshape(shape), keep


# --------------------------------------------------------------------------------------------
# per-kind looks


def _style(rng: np.random.Generator, kind: str) -> dict:
    """Every per-image scalar of one image, drawn before any pixel so that a seed keeps its look
    at every image size."""
    u = rng.uniform
    spindle = kind == "histology" and rng.random() < 0.3
    style = {
        # layout
        "clusters": bool(rng.random() < (0.55 if kind == "fluorescence" else 0.35)),
        "packing": u(0.72, 1.05),
        "radius_spread": u(0.08, 0.28),
        "compact_share": u(0.0, 0.12) if kind == "fluorescence" else 0.0,
        "elong_log": np.log(2.6) if spindle else u(0.05, 0.35),
        "elong_spread": 0.3 if spindle else 0.2,
        "angle": u(0, math.pi),
        "angle_spread": 0.25 if spindle else math.pi,
        "roughness": u(0.02, 0.09),
        # nuclei: spread of amplitude between nuclei, centre-to-edge falloff, rim, texture
        "amp_spread": u(0.1, 0.4),
        "dome": u(0.0, 0.3),
        "rim": u(0.0, 0.3),
        "grain": u(0.05, 0.25),
        "dots": u(0.05, 0.3) * (1.0 if rng.random() < 0.5 else -1.0),
        # optics
        "light": u(0.0, 0.3),
        "blur": u(0.5, 1.5),
        "photons": _log_uniform(rng, 40, 3000),
        "read": u(0.0, 0.008),
    }
    if kind == "fluorescence":
        look = rng.random()
        if look < 0.35:  # dim, low contrast
            level = _log_uniform(rng, 0.07, 0.25)
        elif look < 0.85:
            level = u(0.25, 0.8)
        else:  # saturated
            level = u(0.7, 1.4)
        style |= {
            "radius": _log_uniform(rng, 3.2, 24.0),
            "coverage": _log_uniform(rng, 0.02, 0.45),
            "level": level,
            "compact_gain": u(1.8, 3.0),
            "background": u(0.0, 0.06) * level,
            "glow": u(0.01, 0.06) * level if rng.random() < 0.45 else 0.0,
            "glow_reach": u(1.0, 3.0),
            "filaments": u(0.05, 0.4) * level if rng.random() < 0.35 else 0.0,
            "filament_scale": u(6.0, 30.0),
            "filament_width": u(0.6, 2.0),
        }
    elif kind == "brightfield":
        style |= {
            "radius": _log_uniform(rng, 5.0, 13.0),
            "coverage": _log_uniform(rng, 0.01, 0.07),
            "level": u(0.45, 1.3),
            "amp_spread": u(0.1, 0.3),
            "grain": u(0.1, 0.35),
            "cell_reach": u(2.5, 6.0),
            "cytoplasm": u(0.06, 0.22) if rng.random() < 0.9 else 0.0,
            "outline": u(0.05, 0.25),
            "white": u(0.85, 0.98),
            "light": u(0.0, 0.08),
            "blur": u(0.5, 1.3),
            "photons": _log_uniform(rng, 300, 5000),
            "read": u(0.0, 0.01),
            "tint": 1.0 + rng.normal(0.0, 0.03, 3) * (rng.random() < 0.5),
        }
    elif kind == "tissue":
        vesicular = rng.random() < 0.3
        style |= {
            "clusters": bool(rng.random() < 0.5),
            "packing": u(0.62, 0.82),
            "radius": _log_uniform(rng, 5.0, 15.0),
            "coverage": u(0.45, 0.85),
            "compact_share": u(0.03, 0.2),  # small round dark lymphocytes
            "compact_gain": u(1.4, 2.0),
            "level": u(0.9, 1.7),
            "amp_spread": u(0.1, 0.3),
            "dome": u(0.3, 0.6) if vesicular else u(0.0, 0.2),
            "rim": u(0.4, 0.9) if vesicular else u(0.0, 0.3),
            "grain": u(0.25, 0.5),
            "dots": u(0.1, 0.35) * (1.0 if rng.random() < 0.6 else -1.0),
            "nucleus_eosin": u(0.05, 0.35),
            "lumen_share": u(0.04, 0.2) if rng.random() < 0.65 else 0.0,
            "lumen_scale": u(0.06, 0.15),
            "fibre_sigma": (u(0.6, 1.2), u(3.0, 7.0)),
            "fibre": u(0.15, 0.35),
            "wave": u(0.0, 0.25),
            "tissue_eosin": u(0.4, 1.0),
            "tissue_hema": u(0.05, 0.25),
            "cell_eosin": u(0.08, 0.3),
            "cell_hema": u(0.05, 0.25),
            "cell_reach": u(1.4, 2.2),
            "hematoxylin": _stain(rng, _HEMATOXYLIN),
            "eosin": _stain(rng, _EOSIN),
            "white": u(0.93, 1.0, 3),
            "light": u(0.0, 0.05),
            "blur": u(0.5, 1.1),
            "photons": _log_uniform(rng, 800, 8000),
            "read": u(0.0, 0.01),
        }
    else:
        vesicular = rng.random() < 0.3  # pale nuclei with a dark rim
        tissue_share = 1.0 if rng.random() < 0.5 else u(0.75, 0.97)
        fibre_sigma = (u(0.6, 1.5), u(3.0, 8.0))
        style |= {
            "radius": _log_uniform(rng, 5.0, 24.0),
            "coverage": _log_uniform(rng, 0.08, 0.5),
            "level": u(0.7, 1.6),
            "amp_spread": u(0.1, 0.35),
            "dome": u(0.3, 0.6) if vesicular else u(0.0, 0.25),
            "rim": u(0.4, 1.0) if vesicular else u(0.0, 0.3),
            "grain": u(0.15, 0.45),
            "nucleus_eosin": u(0.1, 0.7),
            "tissue_share": tissue_share,
            "fibre_sigma": fibre_sigma if rng.random() < 0.5 else fibre_sigma[::-1],
            "fibre": u(0.03, 0.15),
            "tissue_eosin": u(0.05, 0.3),
            "tissue_hema": u(0.2, 0.5),
            "cell_eosin": u(0.03, 0.15) if rng.random() < 0.35 else 0.0,
            "cell_reach": u(1.0, 2.5),
            "hematoxylin": _stain(rng, _HEMATOXYLIN),
            "eosin": _stain(rng, _EOSIN),
            "white": u(0.92, 1.0, 3),
            "blur": u(0.5, 1.2),
            "photons": _log_uniform(rng, 500, 8000),
            "read": u(0.0, 0.012),
        }
    return style


def _stain(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A stain's optical-density vector, jittered per image and normalised."""
    vector = np.abs(base + rng.normal(0.0, 0.06, 3))
    return vector / np.linalg.norm(vector)


def _nucleus_density(
    rng: np.random.Generator, shape: tuple[int, int], elements: tuple, lay: dict, st: dict
):
    """Textured density of all nuclei: per-nucleus amplitude, falloff and rim, then chromatin."""
    flat, owner, rho = elements
    n = len(lay["a"])
    amplitude = st["level"] * np.exp(rng.normal(0.0, st["amp_spread"], n))
    if st["compact_share"] > 0:
        amplitude = amplitude * np.where(lay["compact"], st["compact_gain"], 1.0)
    dome = np.clip(st["dome"] + rng.normal(0.0, 0.08, n), 0.0, 0.7)
    rim = np.clip(st["rim"] + rng.normal(0.0, 0.08, n), 0.0, 1.5)
    profile = (1.0 - dome[owner] * rho**2) + rim[owner] * rho**8
    size = shape[0] * shape[1]
    # Summed over nuclei: where nuclei overlap, light (or absorbance) adds up.
    density = np.bincount(flat, weights=amplitude[owner] * profile, minlength=size)
    r0 = lay["r0"]
    grain = _smooth_field(rng, shape, max(0.7, r0 / 7.0))
    dots = _spots(rng, shape, 2.5 / (math.pi * r0**2), max(0.7, r0 / 6.0))
    texture = np.maximum(1.0 + st["grain"] * grain + st["dots"] * dots, 0.05)
    return density.reshape(shape) * texture


def _cells(
    rng: np.random.Generator, labels: np.ndarray, r0: float, reach: float, edge: float = 1.5
):
    """Cell bodies around the nuclei: ``(inside, outline)`` fields in ``[0, 1]``.

    A cell reaches about ``reach`` nucleus radii from its nucleus, with a wavy border that
    ramps over ``edge`` pixels.
    """
    distance = ndimage.distance_transform_edt(labels == 0)
    wobble = 1.0 + 0.35 * _smooth_field(rng, labels.shape, 2.5 * r0)
    margin = reach * r0 * wobble - distance
    inside = np.clip(margin / edge + 0.5, 0.0, 1.0)
    outline = np.exp(-((margin / edge) ** 2))
    return inside, outline


def _optics(rng: np.random.Generator, image: np.ndarray, st: dict) -> np.ndarray:
    """Optical blur, shot noise and Gaussian read noise, then 8 bits."""
    sigma = (st["blur"], st["blur"], 0) if image.ndim == 3 else st["blur"]
    image = ndimage.gaussian_filter(image, sigma)
    image = rng.poisson(np.clip(image, 0, None) * st["photons"]) / st["photons"]
    image = image + rng.normal(0.0, st["read"], image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _illumination(rng: np.random.Generator, shape: tuple[int, int], amount: float) -> np.ndarray:
    """Smooth multiplicative unevenness of the light, around 1."""
    return np.maximum(1.0 + amount * _smooth_field(rng, shape, 0.3 * min(shape)), 0.2)


def _filaments(rng: np.random.Generator, shape: tuple[int, int], st: dict) -> np.ndarray:
    """Thin curvy lines in ``[0, 1]`` (zero crossings of a smooth field) over some regions."""
    scale = st["filament_scale"]
    field = _smooth_field(rng, shape, scale)
    # A unit-variance field of correlation length `scale` changes by about 1/scale per pixel.
    lines = np.exp(-((field * scale / (2.0 * st["filament_width"])) ** 2))
    region = np.clip(_smooth_field(rng, shape, 0.2 * min(shape)) + 0.5, 0.0, 1.0)
    return lines * region


def _fluorescence(rng, shape, labels, elements, lay, st) -> np.ndarray:
    nuclei = _nucleus_density(rng, shape, elements, lay, st)
    background = st["background"]
    if st["glow"] > 0:  # faint cytoplasmic stain around the nuclei
        body, _ = _cells(rng, labels, lay["r0"], st["glow_reach"], max(1.5, lay["r0"] / 3))
        background = background + st["glow"] * body
    if st["filaments"] > 0:  # unlabelled clutter: faint curvy fibres and cell processes
        background = background + st["filaments"] * _filaments(rng, shape, st)
    image = _illumination(rng, shape, st["light"]) * (background + nuclei)
    return np.repeat(_optics(rng, image, st)[:, :, None], 3, axis=2)


def _brightfield(rng, shape, labels, elements, lay, st) -> np.ndarray:
    optical = _nucleus_density(rng, shape, elements, lay, st)
    if st["cytoplasm"] > 0:
        body, outline = _cells(rng, labels, lay["r0"], st["cell_reach"])
        speckle = 1.0 + 0.25 * _smooth_field(rng, shape, 0.8)
        optical = optical + st["cytoplasm"] * body * speckle + st["outline"] * outline
    gray = st["white"] * _illumination(rng, shape, st["light"]) * np.exp(-optical)
    return _optics(rng, gray[:, :, None] * st["tint"], st)


def _histology(rng, shape, labels, elements, lay, st) -> np.ndarray:
    hema = _nucleus_density(rng, shape, elements, lay, st)
    nucleus_eosin = st["nucleus_eosin"] * (labels > 0)
    # Tissue: large patches (with some empty space) of stroma with fibres along one direction.
    patches = _smooth_field(rng, shape, 0.15 * min(shape))
    edge = np.quantile(patches, 1.0 - st["tissue_share"])
    tissue = np.maximum(np.clip(3.0 * (patches - edge) + 0.5, 0, 1), labels > 0)
    fibres = ndimage.gaussian_filter(rng.standard_normal(shape), st["fibre_sigma"])
    fibres /= fibres.std() or 1.0
    weave = tissue * (1.0 + st["fibre"] * fibres + 0.08 * _smooth_field(rng, shape, 1.0))
    eosin = st["tissue_eosin"] * weave + nucleus_eosin
    hema = hema + st["tissue_hema"] * weave
    if st["cell_eosin"] > 0:
        body, _ = _cells(rng, labels, lay["r0"], st["cell_reach"], max(1.5, lay["r0"] / 2))
        eosin = eosin + st["cell_eosin"] * body
    od = hema[:, :, None] * st["hematoxylin"] + eosin[:, :, None] * st["eosin"]
    return _optics(rng, st["white"] * np.exp(-od), st)


def _tissue(rng, shape, labels, elements, lay, st) -> np.ndarray:
    hema = _nucleus_density(rng, shape, elements, lay, st)
    nuclei = labels > 0
    # Stroma everywhere outside the lumen: eosin-pink fibres that wave along one direction.
    stroma = np.maximum(1.0 - lay["lumen"], nuclei)
    noise = rng.standard_normal(shape)
    if st["wave"] > 0:  # bend the fibres: shift rows by a smooth field
        shift = st["wave"] * min(shape) * 0.2 * _smooth_field(rng, shape, 0.2 * min(shape))
        rows = np.arange(shape[0])[:, None] + np.zeros(shape[1], int)
        cols = (np.arange(shape[1])[None, :] + np.round(shift).astype(int)) % shape[1]
        noise = ndimage.gaussian_filter(noise, st["fibre_sigma"], mode="wrap")[rows, cols]
    else:
        noise = ndimage.gaussian_filter(noise, st["fibre_sigma"])
    noise /= noise.std() or 1.0
    weave = stroma * np.maximum(
        1.0 + st["fibre"] * noise + 0.1 * _smooth_field(rng, shape, 0.05 * min(shape)), 0.0
    )
    eosin = st["tissue_eosin"] * weave + st["nucleus_eosin"] * nuclei
    hema = hema + st["tissue_hema"] * weave
    # Cytoplasm of the cells around the nuclei: paler, lilac-pink, not reaching into the lumen.
    body, _ = _cells(rng, labels, lay["r0"], st["cell_reach"], max(1.5, lay["r0"] / 2))
    body = body * stroma * (1.0 + 0.2 * _smooth_field(rng, shape, 1.5))
    eosin = eosin + st["cell_eosin"] * body
    hema = hema + st["cell_hema"] * body
    od = hema[:, :, None] * st["hematoxylin"] + eosin[:, :, None] * st["eosin"]
    light = st["white"] * _illumination(rng, shape, st["light"])[:, :, None]
    return _optics(rng, light * np.exp(-od), st)


_RENDER = {
    "fluorescence": _fluorescence,
    "brightfield": _brightfield,
    "histology": _histology,
    "tissue": _tissue,
}


# --------------------------------------------------------------------------------------------
# public API


def synthetic_sample(
    seed: int,
    size: int | tuple[int, int] = 256,
    kind: str | None = None,
    image_id: str | None = None,
) -> Sample:
    """Generate one synthetic image with exact instance labels.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same ``(seed, size, kind)`` always gives the same sample.
    size : int or (int, int)
        Image side, or ``(height, width)``; at least 8 pixels each.
    kind : {"fluorescence", "brightfield", "histology", "tissue"}, optional
        Image kind. ``None`` draws one of the DSB kinds from ``seed`` with DSB-like odds
        (:data:`KIND_WEIGHTS`); the result then equals the sample made with that kind named
        explicitly. ``"tissue"`` draws dense H&E tissue, a sample of kind ``"histology"``.
    image_id : str, optional
        Id of the sample; ``"synthetic-s<seed>"`` by default.

    Returns
    -------
    Sample
        ``image`` ``(H, W, 3)`` ``uint8``; ``labels`` ``(H, W)`` ``int32`` with ids exactly
        ``1..N`` (later ids lie on top where nuclei overlap); ``kind``, one of
        :data:`~nucleuseg.data.base.KINDS`.

    Raises
    ------
    InputError
        If ``seed``, ``size`` or ``kind`` is invalid.

    Examples
    --------
    >>> s = synthetic_sample(seed=3, size=64, kind="fluorescence")
    >>> s.image.shape, s.labels.shape
    ((64, 64, 3), (64, 64))
    >>> n = int(s.labels.max())  # ids are exactly 1..n
    >>> np.array_equal(np.unique(s.labels), np.arange(n + 1))
    True
    >>> bool((synthetic_sample(3, 64, "fluorescence").image == s.image).all())
    True
    >>> synthetic_sample(seed=0, size=64, kind="tissue").kind
    'histology'
    """
    seed = _check_seed(seed)
    shape = _parse_size(size)
    kind = _pick_kind(seed) if kind is None else _check_kind(kind)
    rng = np.random.default_rng([seed, GENERATOR_KINDS.index(kind)])
    style = _style(rng, kind)
    lay = _layout(rng, shape, style)
    if kind == "tissue":
        lay = _open_lumen(rng, shape, lay, style)
    flat, owner, rho, own_area, full_area = _rasterise(shape, lay)
    labels, keep = _resolve_labels(shape, flat, owner, own_area, full_area)
    kept = keep[owner]
    elements = (flat[kept], owner[kept], rho[kept])
    image = _RENDER[kind](rng, shape, labels, elements, lay, style)
    return Sample(image_id or f"synthetic-s{seed}", image, labels, _dsb_kind(kind))


def make_synthetic(
    n: int,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
) -> Dataset:
    """A lazy dataset of ``n`` synthetic samples, generated when first accessed.

    Image ``i`` is ``synthetic_sample(child_seed(seed, i), size, kind)``; it does not depend on
    ``n``, so a longer dataset starts with the images of a shorter one. Kinds and shapes are known
    without generating pixels, so :meth:`~nucleuseg.data.base.Dataset.split` is cheap. Generated
    samples are kept in a memory-bounded cache, and each access returns fresh arrays.

    Parameters
    ----------
    n : int
        Number of images (``>= 0``).
    size : int or (int, int)
        Image side, or ``(height, width)``.
    seed : int
        Dataset seed (``>= 0``).
    kinds : sequence of str, optional
        Generator kinds (:data:`GENERATOR_KINDS`) to draw from, uniformly (repeat a kind to
        weight it). ``None`` uses DSB-like odds over the DSB kinds. ``"tissue"`` images have the
        kind ``"histology"`` in the dataset.

    Returns
    -------
    Dataset
        Ids ``"synthetic-0000"``, ``"synthetic-0001"``, ...

    Raises
    ------
    InputError
        If an argument is invalid.

    Examples
    --------
    >>> ds = make_synthetic(4, size=48, seed=2)
    >>> len(ds), ds[0].image.shape, ds.info("synthetic-0001")["shape"]
    (4, (48, 48, 3), (48, 48))
    >>> bool((ds[2].labels == make_synthetic(8, size=48, seed=2)[2].labels).all())
    True
    """
    n = _check_seed(n, "n")
    seed = _check_seed(seed)
    shape = _parse_size(size)
    if kinds is not None:
        if isinstance(kinds, str) or len(kinds) == 0:
            raise InputError(
                f"kinds must be a non-empty sequence of {GENERATOR_KINDS}, got {kinds!r}"
            )
        kinds = [_check_kind(k, "kinds") for k in kinds]
    width = max(4, len(str(max(n - 1, 0))))
    ids = [f"synthetic-{i:0{width}d}" for i in range(n)]
    seeds = {image_id: _child_seed(seed, i) for i, image_id in enumerate(ids)}
    drawn = {image_id: _pick_kind(s, kinds) for image_id, s in seeds.items()}
    info = {image_id: {"kind": _dsb_kind(k), "shape": shape} for image_id, k in drawn.items()}

    @functools.lru_cache(maxsize=max(8, _CACHE_BYTES // (7 * shape[0] * shape[1])))
    def generate(image_id: str) -> Sample:
        return synthetic_sample(seeds[image_id], shape, drawn[image_id], image_id)

    def load(image_id: str) -> Sample:
        sample = generate(image_id)
        return Sample(image_id, sample.image.copy(), sample.labels.copy(), sample.kind)

    kind_text = "mixed kinds" if kinds is None else "/".join(sorted(set(kinds)))
    name = f"synthetic(n={n}, size={shape[0]}x{shape[1]}, seed={seed}, {kind_text})"
    return Dataset(ids, load, name, info)
