"""``digits``: a procedural, offline, MNIST-shaped handwritten-digit dataset.

Every image is 28x28x1 float32 in [0, 1] with an int64 label in 0..9, and it is
rendered from scratch: there are no data files, fonts or downloads.

Rendering model
---------------
1. **Skeleton.**  Each class has one or more *writing styles* (``_STYLE_DEFS``), e.g.
   a ``1`` with/without flag and base, an open or closed ``4``, a ``7`` with or
   without cross bar, a ``9`` with a straight or curved tail, a ``2`` with or
   without a loop.  A style is a few strokes; a stroke is a polyline of control
   points (arcs are pre-sampled ellipse segments) in a unit box, y up, the digit
   spanning about [-0.6, 0.6] x [-1, 1].
2. **Per-sample jitter.**  Every control point gets a little independent noise,
   every stroke a small random offset (so strokes overshoot or leave gaps, as in
   real handwriting), and the whole skeleton a smooth random warp (a sum of
   three random low-frequency sinusoids, so connected strokes stay connected).
3. **Affine.**  Random rotation, shear (slant), aspect-ratio change; then, like
   MNIST, the bounding box is scaled to a random size (``_BOX_PX``) and centred
   in the 28x28 frame, then shifted at random as far as the frame allows
   (``_SHIFT_PX``, ``_MARGIN_PX``).
4. **Antialiased ink.**  For every pixel the distance to the nearest stroke
   segment is computed (vectorised: all pixels x all segments of a batch of
   images at once, via one small matmul per image); ink is a linear ramp of that
   distance around half the random stroke width, with a random edge softness
   (which acts like a blur) and a random ink level (contrast).
5. **Clutter.**  Some images get up to three small distractor specks, and most
   get clipped Gaussian pixel noise of random strength.

Randomness is drawn per chunk of ``_CHUNK`` images from
``np.random.SeedSequence(seed, spawn_key=(chunk,))``, each stream drawn once per
chunk in sample-major order, so results are deterministic in ``(labels, seed)``
and prefix-stable: ``digits_arrays("train", 1000)`` equals the first 1000 rows of
``digits_arrays("train", 60000)``.

Learnability
------------
The README ("Datasets") records the held-out accuracy of ``cnn_mnist`` and of the linear
baseline ``linear_mnist`` on the 60k/10k splits, measured with ``python -m zoo.repro cnn_digits``.
While the generator was tuned (train 60k / test 10k, 3 CNN epochs, 20 linear epochs), the CNN
reached 0.986-0.988 and the linear model 0.773-0.778 (MNIST's linear figure is ~0.92). Shifts,
box-size changes and the style mix hurt a template matcher much more than a CNN. Generating the
60k train split takes 8-9 s on one core (``python benchmarks/digits_generation.py``).
"""

from __future__ import annotations

import functools
import operator
import zlib

import numpy as np

__all__ = ["IMAGE_SIZE", "NUM_CLASSES", "SPLIT_SIZES", "digits_arrays", "render_digits"]

IMAGE_SIZE = 28
NUM_CLASSES = 10
SPLIT_SIZES = {"train": 60000, "test": 10000}

# Images are generated in fixed-size chunks with one seed per chunk; this is what
# makes a shorter request a prefix of a longer one.  Changing it changes the data.
_CHUNK = 1000


# --------------------------------------------------------------------------- #
# Stroke templates
# --------------------------------------------------------------------------- #
def _arc(cx, cy, rx, ry, a0, a1, step=24.0):
    """Points on an ellipse arc from angle ``a0`` to ``a1`` (degrees, y up; a1 < a0
    runs clockwise).  ~24 degree steps keep the chord error < 0.3 px at 28x28."""
    n = max(2, int(np.ceil(abs(a1 - a0) / step)) + 1)
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _poly(*points):
    return np.asarray(points, dtype=np.float64)


def _join(*parts):
    """Concatenate polylines into one stroke, dropping duplicated join points."""
    out = [parts[0]]
    for p in parts[1:]:
        if np.allclose(out[-1][-1], p[0], atol=1e-6):
            p = p[1:]
        out.append(p)
    return np.concatenate(out, axis=0)


def _lemniscate(width, n=20):
    """Single-stroke figure-eight (Gerono lemniscate, vertical): an ``8`` written
    in one go, crossing in the middle."""
    t = np.linspace(0.0, 2 * np.pi, n + 1)
    return np.stack([width * 2 * np.sin(t) * np.cos(t), np.sin(t)], axis=1)[::-1]


def _two_top(a1=-35.0):
    return _arc(0.0, 0.45, 0.5, 0.55, 155.0, a1)


def _loop2():
    # Diagonal enters a small loop at its upper-left, goes round once (CCW) and
    # leaves at the bottom along the base line.
    cx, cy, r = -0.35, -0.82, 0.17
    top = _two_top()
    loop = _arc(cx, cy, r, r, 135.0, 630.0)
    base = _poly(loop[-1], (0.62, cy - r))
    return [_join(top, loop[:1], loop, base)]


def _five(bar_to, bowl_r, one_stroke):
    bowl = _arc(-0.02, -0.42, bowl_r, 0.55, 135.0, -150.0)
    stem_top = (-0.38, 1.0)
    if one_stroke:
        return [_join(_poly((bar_to, 1.0), stem_top), _poly(stem_top, bowl[0]), bowl)]
    return [_join(_poly(stem_top, bowl[0]), bowl), _poly(stem_top, (bar_to, 1.0))]


def _six(straight):
    loop = _arc(0.02, -0.5, 0.47, 0.48, 180.0, 530.0)
    if straight:
        stem = _poly((0.3, 1.0), loop[0])
    else:
        stem = _join(_arc(0.35, -0.35, 0.8, 1.3, 100.0, 180.0), _poly((-0.45, -0.35), loop[0]))
    return [_join(stem, loop)]


def _nine(curved):
    # Loop written counter-clockwise from its right side, then the tail goes down.
    loop = _arc(0.0, 0.45, 0.47, 0.5, 0.0, 370.0)
    if curved:
        tail = _poly(loop[-1], (0.45, -0.3), (0.28, -0.82), (-0.05, -1.0), (-0.4, -0.85))
    else:
        tail = _poly(loop[-1], (0.4, -1.0))
    return [_join(loop, tail)]


# label -> list of (style name, relative frequency, strokes)
_STYLE_DEFS = {
    0: [
        ("oval", 0.6, [_arc(0.0, 0.0, 0.55, 1.0, 95.0, 95.0 + 375.0)]),
        ("narrow-open", 0.4, [_arc(0.0, 0.0, 0.42, 1.0, 110.0, 110.0 + 340.0)]),
    ],
    1: [
        ("stick", 0.45, [_poly((0.0, 1.0), (0.0, -1.0))]),
        ("flag", 0.35, [_poly((-0.32, 0.68), (0.0, 1.0), (0.0, -1.0))]),
        (
            "flag-base",
            0.2,
            [_poly((-0.32, 0.68), (0.0, 1.0), (0.0, -1.0)), _poly((-0.32, -1.0), (0.32, -1.0))],
        ),
    ],
    2: [
        ("plain", 0.65, [_join(_two_top(), _poly(_two_top()[-1], (-0.55, -1.0), (0.62, -1.0)))]),
        ("loop", 0.35, _loop2()),
    ],
    3: [
        (
            "round",
            0.7,
            [
                _join(
                    _arc(0.0, 0.5, 0.45, 0.48, 150.0, -95.0),
                    _arc(0.0, -0.47, 0.52, 0.52, 95.0, -150.0),
                )
            ],
        ),
        (
            "flat-top",
            0.3,
            [
                _join(
                    _poly((-0.45, 1.0), (0.45, 1.0), (-0.05, 0.12)),
                    _arc(0.0, -0.45, 0.52, 0.55, 105.0, -150.0),
                )
            ],
        ),
    ],
    4: [
        (
            "closed",
            0.5,
            [_poly((0.25, 1.0), (-0.55, -0.35), (0.6, -0.35)), _poly((0.25, 1.0), (0.25, -1.0))],
        ),
        (
            "open",
            0.5,
            [_poly((-0.42, 1.0), (-0.5, -0.3), (0.6, -0.3)), _poly((0.3, 0.85), (0.3, -1.0))],
        ),
    ],
    5: [
        ("two-stroke", 0.6, _five(bar_to=0.5, bowl_r=0.55, one_stroke=False)),
        ("one-stroke", 0.4, _five(bar_to=0.42, bowl_r=0.6, one_stroke=True)),
    ],
    6: [
        ("curved", 0.65, _six(straight=False)),
        ("straight", 0.35, _six(straight=True)),
    ],
    7: [
        ("plain", 0.5, [_poly((-0.5, 1.0), (0.55, 1.0), (-0.1, -1.0))]),
        (
            "crossbar",
            0.3,
            [_poly((-0.5, 1.0), (0.55, 1.0), (-0.1, -1.0)), _poly((-0.22, 0.0), (0.42, 0.0))],
        ),
        (
            "curved",
            0.2,
            [
                _poly(
                    (-0.5, 0.92), (-0.45, 1.0), (0.55, 1.0), (0.25, 0.3), (0.05, -0.3), (0.0, -1.0)
                )
            ],
        ),
    ],
    8: [
        (
            "two-loops",
            0.55,
            [
                _arc(0.0, 0.5, 0.38, 0.47, 270.0, 270.0 + 365.0),
                _arc(0.0, -0.45, 0.5, 0.53, 90.0, 90.0 + 365.0),
            ],
        ),
        ("one-stroke", 0.45, [_lemniscate(0.5)]),
    ],
    9: [
        ("straight-tail", 0.6, _nine(curved=False)),
        ("curved-tail", 0.4, _nine(curved=True)),
    ],
}


class _Style:
    """A style's skeleton, flattened for vectorised rendering.

    ``vertices`` (V, 2) control points; ``segments`` (S, 2) vertex-index pairs;
    ``stroke`` (V,) stroke index of each vertex."""

    def __init__(self, label, name, weight, strokes):
        self.label, self.name, self.weight = label, name, weight
        verts, segs, stroke_of = [], [], []
        for k, s in enumerate(strokes):
            base = sum(len(v) for v in verts)
            verts.append(np.asarray(s, dtype=np.float64))
            segs.extend((base + i, base + i + 1) for i in range(len(s) - 1))
            stroke_of.extend([k] * len(s))
        self.vertices = np.concatenate(verts, axis=0)
        self.segments = np.asarray(segs, dtype=np.intp)
        self.stroke = np.asarray(stroke_of, dtype=np.intp)
        self.num_strokes = len(strokes)


_STYLES = [
    _Style(lbl, name, w, strokes)
    for lbl, defs in sorted(_STYLE_DEFS.items())
    for name, w, strokes in defs
]
_MAX_VERTS = max(len(s.vertices) for s in _STYLES)
_MAX_STROKES = max(s.num_strokes for s in _STYLES)


def _class_styles(label):
    """(style indices, cumulative probabilities) of one class, for inverse-CDF sampling."""
    idx = np.asarray([i for i, s in enumerate(_STYLES) if s.label == label])
    w = np.asarray([_STYLES[i].weight for i in idx])
    return idx, np.cumsum(w) / w.sum()


_CLASS_STYLES = [_class_styles(label) for label in range(NUM_CLASSES)]

# --------------------------------------------------------------------------- #
# Variability knobs, tuned so that the CNN reaches ~99 % and a linear model only
# ~78 % (see the module docstring).  Translation and box size hurt the linear model
# most; rotation and warp hurt the CNN about as much, so they are kept moderate.
# Units: skeleton units unless "px".
# --------------------------------------------------------------------------- #
_ROTATION_DEG = 10.0  # uniform +-
_SHEAR = (-0.25, 0.45)  # x += shear * y (positive = right-leaning slant)
_LOG_ASPECT = 0.25  # width scale = exp(U(-a, a))
_BOX_PX = (13.0, 20.5)  # bounding box longest side after normalisation
_SHIFT_PX = 3.0  # uniform +- translation of the box centre (capped, see below)
_MARGIN_PX = 2.0  # keep the skeleton's bbox this far from the border
_WIDTH_PX = (1.5, 3.6)  # stroke width
_SOFT_PX = (0.7, 1.6)  # edge ramp width (acts as blur)
_INK = (0.65, 1.0)  # ink intensity (contrast)
_NOISE = (-0.03, 0.10)  # pixel-noise std ~ max(0, U(...)): ~20 % clean images
_SPECK_PROB = 0.3  # chance of 1-3 distractor specks
_SPECK_RADIUS_PX = (0.3, 1.1)
_POINT_JITTER = 0.025  # iid control-point noise (std)
_STROKE_JITTER = 0.05  # per-stroke offset (std)
_WARP_AMP = 0.06  # smooth warp amplitude (std per term)
_WARP_FREQ = 1.4  # smooth warp angular frequency (std, rad / unit)
_WARP_TERMS = 3

# Column layout of the per-sample uniform (U) and normal (Z) parameter rows.
_U_STYLE, _U_ROT, _U_SHEAR, _U_ASPECT, _U_BOX, _U_TX, _U_TY = range(7)
_U_WIDTH, _U_SOFT, _U_INK, _U_NOISE, _U_SPECK_N = range(7, 12)
_U_SPECKS = 12  # 3 specks x (x, y, radius, ink)
_U_WARP_PHASE = _U_SPECKS + 12  # _WARP_TERMS x 2 phases
_NUM_U = _U_WARP_PHASE + 2 * _WARP_TERMS
_Z_WARP_AMP = 0  # _WARP_TERMS x 2
_Z_WARP_FREQ = _Z_WARP_AMP + 2 * _WARP_TERMS  # _WARP_TERMS x 2
_Z_STROKE = _Z_WARP_FREQ + 2 * _WARP_TERMS  # _MAX_STROKES x 2
_Z_POINT = _Z_STROKE + 2 * _MAX_STROKES  # _MAX_VERTS x 2
_NUM_Z = _Z_POINT + 2 * _MAX_VERTS

# Pixel centres relative to the image centre, as rows [x, y, 1, x^2 + y^2] for
# the matmul form of the squared point-segment distance (see _segment_dist2).
_c = np.arange(IMAGE_SIZE, dtype=np.float64) - (IMAGE_SIZE - 1) / 2.0
_PY, _PX = np.meshgrid(_c, _c, indexing="ij")
_PIXELS = np.stack(
    [_PX.ravel(), _PY.ravel(), np.ones(_PX.size), (_PX**2 + _PY**2).ravel()], axis=1
).astype(np.float32)  # (784, 4)
del _c, _PY, _PX


def _uniform(u, lo_hi):
    lo, hi = lo_hi
    return lo + (hi - lo) * u


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #
def _segment_dist2(a, b):
    """Squared distance from every pixel centre to the nearest segment.

    a, b: (m, S, 2) float32 segment end points in pixel units (centred, y down).
    Returns (m, 784) float32.

    With d = b - a, L = |d|^2 and s = (p - a).d / L (projection parameter), the
    closest point is a + t d with t = clip(s, 0, 1) and
        |p - a - t d|^2 = |p - a|^2 + L (t^2 - 2 t s).
    Both |p - a|^2 and s are linear in [x, y, 1, x^2+y^2], so one (784, 4) @
    (4, 2S) matmul per image gives them for all pixels x segments; that is
    ~2x faster than the naive broadcast and keeps the working set in cache.
    """
    m, s_count, _ = a.shape
    d = b - a
    length2 = np.maximum((d * d).sum(-1), 1e-6)  # (m, S)
    w = np.empty((m, 4, 2 * s_count), dtype=np.float32)
    w[:, 0, :s_count] = d[..., 0] / length2
    w[:, 1, :s_count] = d[..., 1] / length2
    w[:, 2, :s_count] = -(a * d).sum(-1) / length2
    w[:, 3, :s_count] = 0.0
    w[:, 0, s_count:] = -2.0 * a[..., 0]
    w[:, 1, s_count:] = -2.0 * a[..., 1]
    w[:, 2, s_count:] = (a * a).sum(-1)
    w[:, 3, s_count:] = 1.0
    r = np.matmul(_PIXELS, w)  # (m, 784, 2S)
    proj, dist2 = r[..., :s_count], r[..., s_count:]
    t = np.clip(proj, 0.0, 1.0)
    proj *= -2.0
    proj += t
    proj *= t  # t^2 - 2ts
    proj *= length2[:, None, :]
    proj += dist2
    return np.maximum(proj.min(axis=-1), 0.0)


def _skeletons(style, u, z):
    """Jittered, warped, affinely transformed control points of one style.

    u: (m, _NUM_U) uniforms, z: (m, _NUM_Z) normals.  Returns (m, V, 2) in pixel
    units relative to the image centre, y down."""
    m = len(u)
    nv = len(style.vertices)
    v = np.broadcast_to(style.vertices, (m, nv, 2)).copy()
    # Control-point and per-stroke jitter.
    v += _POINT_JITTER * z[:, _Z_POINT : _Z_POINT + 2 * nv].reshape(m, nv, 2)
    stroke_off = z[:, _Z_STROKE : _Z_STROKE + 2 * _MAX_STROKES].reshape(m, _MAX_STROKES, 2)
    v += _STROKE_JITTER * stroke_off[:, style.stroke]
    # Smooth warp: displacement = sum_k amp_k * sin(freq_k . p + phase_k), per axis.
    amp = _WARP_AMP * z[:, _Z_WARP_AMP : _Z_WARP_AMP + 2 * _WARP_TERMS].reshape(m, _WARP_TERMS, 2)
    freq = _WARP_FREQ * z[:, _Z_WARP_FREQ : _Z_WARP_FREQ + 2 * _WARP_TERMS].reshape(
        m, _WARP_TERMS, 2
    )
    phase = (
        2 * np.pi * u[:, _U_WARP_PHASE : _U_WARP_PHASE + 2 * _WARP_TERMS].reshape(m, _WARP_TERMS, 2)
    )
    arg = np.einsum("mvc,mkc->mvk", v, freq)  # (m, V, K)
    v = v + np.einsum("mvka,mka->mva", np.sin(arg[..., None] + phase[:, None]), amp)
    # Affine: aspect, shear (slant), rotation.
    aspect = np.exp(_LOG_ASPECT * (2 * u[:, _U_ASPECT] - 1))
    shear = _uniform(u[:, _U_SHEAR], _SHEAR)
    theta = np.deg2rad(_ROTATION_DEG * (2 * u[:, _U_ROT] - 1))
    x = v[..., 0] * aspect[:, None] + shear[:, None] * v[..., 1]
    y = v[..., 1]
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x, y = c * x - s * y, s * x + c * y
    # MNIST-like normalisation: longest bbox side -> random box size, bbox centred,
    # plus a random shift.  y flips to image rows (down).
    lo_x, hi_x, lo_y, hi_y = x.min(1), x.max(1), y.min(1), y.max(1)
    scale = _uniform(u[:, _U_BOX], _BOX_PX) / np.maximum(hi_x - lo_x, hi_y - lo_y)
    # The shift is capped by the room left in the frame (per axis), so large
    # digits are never cut off while narrow ones (1, 7) wander more sideways.
    room_x = (IMAGE_SIZE - 2 * _MARGIN_PX - (hi_x - lo_x) * scale) / 2
    room_y = (IMAGE_SIZE - 2 * _MARGIN_PX - (hi_y - lo_y) * scale) / 2
    tx = np.clip(room_x, 0.0, _SHIFT_PX) * (2 * u[:, _U_TX] - 1)
    ty = np.clip(room_y, 0.0, _SHIFT_PX) * (2 * u[:, _U_TY] - 1)
    px = (x - (lo_x + hi_x)[:, None] / 2) * scale[:, None] + tx[:, None]
    py = -(y - (lo_y + hi_y)[:, None] / 2) * scale[:, None] + ty[:, None]
    return np.stack([px, py], axis=-1)


def _ramp(dist, half_width, soft):
    """Antialiased coverage: 1 inside, 0 outside, linear over ``soft`` px."""
    return np.clip((half_width - dist) / soft + 0.5, 0.0, 1.0)


def _render_chunk(labels, seq):
    """Render one chunk.  labels: (m,) ints; seq: its SeedSequence.  -> (m, 784) float32.

    Each random stream is drawn exactly once, sample-major, so the first k rows
    of a chunk do not depend on how many rows follow (prefix stability)."""
    m = len(labels)
    u_seq, z_seq, noise_seq = seq.spawn(3)
    u = np.random.default_rng(u_seq).random((m, _NUM_U))
    z = np.random.default_rng(z_seq).standard_normal((m, _NUM_Z))
    noise = np.random.default_rng(noise_seq).standard_normal((m, IMAGE_SIZE**2), dtype=np.float32)

    # Style: inverse CDF of the class's style frequencies.
    style_ids = np.empty(m, dtype=np.intp)
    for lbl in range(NUM_CLASSES):
        sel = labels == lbl
        if sel.any():
            idx, cdf = _CLASS_STYLES[lbl]
            pick = np.minimum(np.searchsorted(cdf, u[sel, _U_STYLE], side="right"), len(idx) - 1)
            style_ids[sel] = idx[pick]

    half_width = (_uniform(u[:, _U_WIDTH], _WIDTH_PX) / 2).astype(np.float32)[:, None]
    soft = _uniform(u[:, _U_SOFT], _SOFT_PX).astype(np.float32)[:, None]
    ink = _uniform(u[:, _U_INK], _INK).astype(np.float32)[:, None]

    # Strokes: rendered per style so every batch has the same segment count (no padding).
    dist2 = np.empty((m, IMAGE_SIZE**2), dtype=np.float32)
    for sid in np.unique(style_ids):
        rows = np.flatnonzero(style_ids == sid)
        style = _STYLES[sid]
        pts = _skeletons(style, u[rows], z[rows]).astype(np.float32)
        dist2[rows] = _segment_dist2(pts[:, style.segments[:, 0]], pts[:, style.segments[:, 1]])
    img = _ramp(np.sqrt(dist2), half_width, soft) * ink

    # Distractor specks: up to three small dots anywhere in the frame.
    n_specks = np.where(
        u[:, _U_SPECK_N] < _SPECK_PROB, 1 + np.floor(3 * u[:, _U_SPECK_N] / _SPECK_PROB), 0
    ).astype(np.intp)
    for k in range(3):
        rows = np.flatnonzero(n_specks > k)
        if rows.size == 0:
            continue
        sp = u[rows, _U_SPECKS + 4 * k : _U_SPECKS + 4 * k + 4]
        cx = (sp[:, 0:1] - 0.5) * (IMAGE_SIZE - 4)
        cy = (sp[:, 1:2] - 0.5) * (IMAGE_SIZE - 4)
        radius = _uniform(sp[:, 2:3], _SPECK_RADIUS_PX)
        dist = np.sqrt((_PIXELS[None, :, 0] - cx) ** 2 + (_PIXELS[None, :, 1] - cy) ** 2)
        speck = (_ramp(dist, radius, 1.0) * _uniform(sp[:, 3:4], (0.3, 0.9))).astype(np.float32)
        np.maximum(img[rows], speck, out=speck)
        img[rows] = speck

    sigma = np.maximum(_uniform(u[:, _U_NOISE], _NOISE), 0.0).astype(np.float32)[:, None]
    img += sigma * noise
    return np.clip(img, 0.0, 1.0, out=img)


def _check_seed(seed):
    seed = operator.index(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return seed


def render_digits(labels: np.ndarray, seed: int) -> np.ndarray:
    """Render one image per label.

    Args:
      labels: (n,) integer array with values in 0..9.
      seed: non-negative int.
    Returns:
      float32 array (n, 28, 28, 1) in [0, 1].  Deterministic in ``(labels, seed)``;
      row i depends only on ``labels[i]``, ``seed`` and i, so rendering a prefix
      of ``labels`` gives a prefix of the result.
    """
    seed = _check_seed(seed)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be in 0..{NUM_CLASSES - 1}")
    labels = labels.astype(np.intp)
    out = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
    for chunk, start in enumerate(range(0, len(labels), _CHUNK)):
        part = labels[start : start + _CHUNK]
        seq = np.random.SeedSequence(seed, spawn_key=(chunk,))
        out[start : start + len(part), ..., 0] = _render_chunk(part, seq).reshape(
            -1, IMAGE_SIZE, IMAGE_SIZE
        )
    return out


def _balanced_labels(n, seed):
    """(n,) int64 labels: each full chunk of ``_CHUNK`` is a seeded shuffle of
    exactly ``_CHUNK / 10`` of every class (prefix-stable like the images)."""
    out = np.empty(n, dtype=np.int64)
    for chunk, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk,)))
        part = rng.permutation(np.arange(_CHUNK, dtype=np.int64) % NUM_CLASSES)
        out[start : start + _CHUNK] = part[: min(_CHUNK, n - start)]
    return out


def _split_seeds(split, seed):
    """Stable (label_seed, image_seed) for (split, seed); crc32, not hash(), so it
    is identical across processes and Python versions."""
    state = np.random.SeedSequence([seed, zlib.crc32(split.encode("utf-8"))]).generate_state(
        2, dtype=np.uint64
    )
    return int(state[0]), int(state[1])


def digits_arrays(
    split: str, num_examples: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``digits`` dataset as numpy arrays.

    Args:
      split: ``"train"`` or ``"test"``.
      num_examples: number of examples (default ``SPLIT_SIZES[split]``); must be > 0.
      seed: non-negative int; train and test derive different seeds from it, so
        they never share samples.
    Returns:
      ``(x, y)``: x float32 (n, 28, 28, 1) in [0, 1], y int64 (n,) in 0..9.  Both
      are read-only and memoised: treat them as shared.  A smaller
      ``num_examples`` gives a prefix of a larger one.
    Raises:
      ValueError: unknown split, or num_examples <= 0, or negative seed.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; valid splits are {sorted(SPLIT_SIZES)}")
    n = SPLIT_SIZES[split] if num_examples is None else operator.index(num_examples)
    if n <= 0:
        raise ValueError(f"num_examples must be positive, got {num_examples}")
    return _digits_arrays_cached(split, n, _check_seed(seed))


@functools.lru_cache(maxsize=8)
def _digits_arrays_cached(split, num_examples, seed):
    label_seed, image_seed = _split_seeds(split, seed)
    y = _balanced_labels(num_examples, label_seed)
    x = render_digits(y, image_seed)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y
