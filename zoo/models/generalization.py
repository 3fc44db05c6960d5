"""Regressors of the in-domain generalization benchmark: images → normalised factors.

Schott et al., "Visual representation learning does not generalize strongly within the same
domain" (ICLR 2022), 002_7240b1e8d13f6586.txt lines 2068-2826 (App. H); digest part (b.2).

Every model regresses all factors of variation, ``y ≈ f(x)`` with ``y`` = factor index / (K − 1),
trained with the paper's loss ``Σ_j (y_j − f_j(x))²`` averaged over the batch, Adam (lr 5e-4;
1e-4 for DenseNet and for fine-tuning), batch 64. Registered names (``zoo.list_models("gen_*")``):

================  ==============================================================================
gen_mlp           Linear(64·64·C, 90) ReLU, 3×[Linear(90, 90) ReLU], Linear(90, 45) ReLU, Linear(n)
gen_cnn           the DisLib CNN (SlowVAE's encoder, :func:`zoo.models.slowvae.dislib_encoder`)
                  with a linear head of n outputs: the authors' ``VanillaCNN``
gen_coordconv     AddCoords + Conv(16) and 5×[ReLU, Conv(16)], MaxPool, Dense(32) ReLU, Dense(n)
gen_set_encoder   per pixel (i, j, value) → 40-40-20 ReLU MLP, mean pool, 20-20-n readout
gen_stn           a spatial transformer (localisation net → affine grid sample) before the CNN
gen_resnet50      keras.applications ResNet50 / ResNet101 / DenseNet121 with global average
gen_resnet101     pooling and a new linear head; trained from scratch by default,
gen_densenet121   ``backbone_weights=PATH`` loads ImageNet weights the user has (none downloaded)
gen_readout       the paper's 40-40-40 MLP on the frozen ``encode`` output (μ) of any zoo model
                  (``encoder=betavae_sprites | ada_gvae_sprites | slowvae_sprites | pcl_sprites``,
                  ``encoder_weights=RUN_DIR``), trained 8 epochs
================  ==============================================================================

``factors`` names the benchmark grid the model is built for (``sprites``, ``sprites/no_rotation``,
``dsprites``, ``shapes3d``, ``mpi3d``; a split variant such as ``sprites/extrapolation`` names its
base): it fixes the image shape and the number of outputs, and the factor sizes give the
full-grid variance of the ``r_squared`` metric (:class:`zoo.eval.RSquared`).

Not built: the rotation-equivariant C8 nets (Rotation-EQ, -big) need e2cnn's ``R2Conv``, which is
PyTorch-only, and no TensorFlow library provides steerable group convolutions. CoordConv's
readout is ``Linear(32, 32)`` in the paper, an input width its stated layers cannot produce; here
the convolutions downsample to 4×4, max-pool to 2×2×16 and a Dense(32) follows the flatten.

Serving: ``serving_default`` (``images`` (B, H, W, C) float32 in [0, 1] → ``factors`` (B, n)).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from zoo.models.base import ZooModel, check_image_batch
from zoo.registry import InvalidConfigError, building_name, register_model

__all__ = [
    "FactorRegressor",
    "AddCoords",
    "AffineSampler",
    "SpatialTransformer",
    "SetEncoder",
    "ARCHITECTURES",
    "factor_squared_error",
    "affine_sample",
]

PAPER = "002_7240b1e8d13f6586.txt"
ARCHITECTURES = ("mlp", "cnn", "coordconv", "set_encoder", "stn", "resnet50", "resnet101",
                 "densenet121", "readout")  # fmt: skip
_APPLICATIONS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "densenet121": "DenseNet121"}


def factor_squared_error(y_true, y_pred):
    """The paper's regression loss per example: ``Σ_j (y_j − f_j)²`` (Keras averages the batch)."""
    return tf.reduce_sum(tf.square(tf.cast(y_true, y_pred.dtype) - y_pred), axis=-1)


# -- layers ---------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class AddCoords(keras.layers.Layer):
    """CoordConv's coordinate channels (Liu et al. 2018): ``(B, H, W, C)`` → ``(B, H, W, C + 2)``
    with channel C = the column (x) and C + 1 = the row (y), each linear in [−1, 1]."""

    def call(self, x):
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        xs = tf.linspace(-1.0, 1.0, w)
        ys = tf.linspace(-1.0, 1.0, h)
        xx = tf.broadcast_to(xs[None, None, :, None], (b, h, w, 1))
        yy = tf.broadcast_to(ys[None, :, None, None], (b, h, w, 1))
        return tf.concat([x, tf.cast(xx, x.dtype), tf.cast(yy, x.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)


def affine_sample(images: tf.Tensor, theta: tf.Tensor) -> tf.Tensor:
    """Bilinear sampling of ``images (B, H, W, C)`` on the affine grid of ``theta (B, 2, 3)``.

    PyTorch's ``affine_grid`` + ``grid_sample`` (align_corners=False, zero padding), the
    spatial transformer tutorial's sampler: output pixel (row r, column c) reads the input at
    ``theta · (x_c, y_r, 1)`` in normalised coordinates, x_c = (2c + 1) / W − 1, so the identity
    ``theta`` returns the image exactly."""
    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    hf, wf = tf.cast(h, images.dtype), tf.cast(w, images.dtype)
    xs = (2.0 * tf.range(wf) + 1.0) / wf - 1.0
    ys = (2.0 * tf.range(hf) + 1.0) / hf - 1.0
    gx, gy = tf.meshgrid(xs, ys)  # (H, W)
    grid = tf.stack([gx, gy, tf.ones_like(gx)], axis=-1)  # (H, W, 3)
    src = tf.einsum("bij,hwj->bhwi", tf.cast(theta, images.dtype), grid)  # (B, H, W, 2)
    px = ((src[..., 0] + 1.0) * wf - 1.0) / 2.0
    py = ((src[..., 1] + 1.0) * hf - 1.0) / 2.0
    x0, y0 = tf.floor(px), tf.floor(py)
    wx1, wy1 = px - x0, py - y0
    # One pixel of zeros around the image: a clipped index outside lands on it (zero padding).
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    flat = tf.reshape(padded, (b, (h + 2) * (w + 2), -1))

    def gather(yi, xi):
        xi = tf.clip_by_value(tf.cast(xi, tf.int32) + 1, 0, w + 1)
        yi = tf.clip_by_value(tf.cast(yi, tf.int32) + 1, 0, h + 1)
        idx = tf.reshape(yi * (w + 2) + xi, (b, -1))
        return tf.reshape(tf.gather(flat, idx, batch_dims=1), shape)

    out = (
        gather(y0, x0) * ((1 - wy1) * (1 - wx1))[..., None]
        + gather(y0, x0 + 1) * ((1 - wy1) * wx1)[..., None]
        + gather(y0 + 1, x0) * (wy1 * (1 - wx1))[..., None]
        + gather(y0 + 1, x0 + 1) * (wy1 * wx1)[..., None]
    )
    return out


@keras.saving.register_keras_serializable(package="zoo")
class AffineSampler(keras.layers.Layer):
    """``(images (B, H, W, C), theta (B, 6))`` → images resampled by :func:`affine_sample`."""

    def call(self, inputs):
        images, theta = inputs
        return affine_sample(images, tf.reshape(theta, (-1, 2, 3)))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def _identity_init(shape, dtype=None):
    return tf.constant([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=dtype or "float32")


class SpatialTransformer(keras.Model):
    """The PyTorch tutorial's localisation net (App. H): Conv(8, k7) MaxPool2 ReLU, Conv(10, k5)
    MaxPool2 ReLU, Conv(10, k6) MaxPool2 ReLU, Linear(90, 32) ReLU, Linear(32, 6), initialised to
    the identity transform (zero kernel, bias (1, 0, 0, 0, 1, 0)); then the affine sampler.
    ``(B, H, W, C)`` → ``(B, H, W, C)``; the output equals the input at initialisation."""

    def __init__(self, image_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        if min(int(image_shape[0]), int(image_shape[1])) < 38:
            raise InvalidConfigError(
                f"the spatial transformer's localisation net (three valid convs and pools) "
                f"takes images of at least 38×38; got {tuple(image_shape)}"
            )
        inputs = keras.Input(tuple(image_shape))
        x = inputs
        for filters, k in ((8, 7), (10, 5), (10, 6)):
            x = keras.layers.Conv2D(filters, k)(x)
            x = keras.layers.MaxPooling2D(2)(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(32, activation="relu")(x)
        theta = keras.layers.Dense(
            6, kernel_initializer="zeros", bias_initializer=_identity_init, name="theta"
        )(x)
        self.localization = keras.Model(inputs, theta, name="localization")
        self.sampler = AffineSampler()

    def call(self, images):
        return self.sampler((images, self.localization(images)))


class SetEncoder(keras.Model):
    """The coordinate-based SetEncoder (App. H): every pixel as (i, j, value) with i, j ∈ [0, 1],
    a shared 40-40-20 ReLU MLP, a mean over pixels (invariant to their order).
    ``(B, H, W, C)`` → ``(B, 20)``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.point_net = [keras.layers.Dense(u, activation="relu") for u in (40, 40, 20)]

    def call(self, images):
        shape = tf.shape(images)
        b, h, w = shape[0], shape[1], shape[2]
        i = tf.linspace(0.0, 1.0, h)
        j = tf.linspace(0.0, 1.0, w)
        ii = tf.broadcast_to(tf.cast(i, images.dtype)[None, :, None, None], (b, h, w, 1))
        jj = tf.broadcast_to(tf.cast(j, images.dtype)[None, None, :, None], (b, h, w, 1))
        points = tf.concat([ii, jj, images], axis=-1)
        points = tf.reshape(points, (b, h * w, images.shape[-1] + 2))
        for layer in self.point_net:
            points = layer(points)
        return tf.reduce_mean(points, axis=1)


# -- the bodies ---------------------------------------------------------------------------------
def _mlp_body(image_shape, n):
    return keras.Sequential(
        [keras.Input(tuple(image_shape)), keras.layers.Flatten()]
        + [keras.layers.Dense(90, activation="relu") for _ in range(4)]
        + [keras.layers.Dense(45, activation="relu"), keras.layers.Dense(n)],
        name="mlp",
    )


def _coordconv_body(image_shape, n):
    h = int(image_shape[0])
    # Stride 2 down to 4×4, then stride 1 (the paper gives no strides; see the module docstring).
    strides = []
    size = h
    for _ in range(6):
        s = 2 if size > 4 else 1
        strides.append(s)
        size //= s
    layers = [keras.Input(tuple(image_shape)), AddCoords(name="add_coords"),
              keras.layers.Conv2D(16, 3, strides[0], "same", name="coord_conv")]  # fmt: skip
    for s in strides[1:]:
        layers += [keras.layers.ReLU(), keras.layers.Conv2D(16, 3, s, "same")]
    layers += [
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(n),
    ]
    return keras.Sequential(layers, name="coordconv")


def _set_encoder_body(image_shape, n):
    return keras.Sequential(
        [keras.Input(tuple(image_shape)), SetEncoder(name="set_encoder"),
         keras.layers.Dense(20, activation="relu"), keras.layers.Dense(20, activation="relu"),
         keras.layers.Dense(n)],
        name="set_encoder_regressor",
    )  # fmt: skip


def _cnn_body(image_shape, n, name="cnn"):
    from zoo.models.slowvae import dislib_encoder

    return dislib_encoder(image_shape, n, name=name)


class _STNBody(keras.Model):
    def __init__(self, image_shape, n, **kwargs):
        super().__init__(**kwargs)
        self.transformer = SpatialTransformer(image_shape, name="spatial_transformer")
        self.cnn = _cnn_body(image_shape, n)

    def call(self, images):
        return self.cnn(self.transformer(images))


class _ApplicationBody(keras.Model):
    """A keras.applications backbone (no top, global average pooling) and a linear head.

    Images in [0, 1] are scaled to [0, 255] and preprocessed as the application expects
    (caffe-style for ResNet, torch-style for DenseNet), so ImageNet weights see their own input
    statistics; one-channel images are repeated to three channels (ImageNet weights need 3)."""

    def __init__(self, kind, image_shape, n, backbone_weights=None, **kwargs):
        super().__init__(**kwargs)
        h, w, c = (int(d) for d in image_shape)
        if min(h, w) < 32:
            raise InvalidConfigError(f"{_APPLICATIONS[kind]} takes images of at least 32×32")
        self.channels = c
        self.kind = kind
        if backbone_weights is not None and not Path(backbone_weights).is_file():
            raise InvalidConfigError(
                f"backbone_weights: no file {backbone_weights} (a keras.applications "
                f"{_APPLICATIONS[kind]} no-top weights file; nothing is downloaded)"
            )
        builder = getattr(keras.applications, _APPLICATIONS[kind])
        try:
            self.backbone = builder(
                include_top=False,
                weights=None if backbone_weights is None else str(backbone_weights),
                input_shape=(h, w, 3),
                pooling="avg",
            )
        except ValueError as e:
            raise InvalidConfigError(f"backbone_weights {backbone_weights}: {e}") from e
        self.head = keras.layers.Dense(n, name="head")

    def call(self, images):
        x = images if self.channels == 3 else tf.repeat(images[..., :1], 3, axis=-1)
        x = 255.0 * x
        if self.kind == "densenet121":
            x = keras.applications.densenet.preprocess_input(x)
        else:
            x = keras.applications.resnet.preprocess_input(x)
        return self.head(self.backbone(x))


class _ReadoutBody(keras.Model):
    """The paper's readout MLP (Linear(z, 40) ReLU, 2×[Linear(40, 40) ReLU], Linear(40, n)) on
    the frozen ``encode`` output of a zoo model (its ``mu``)."""

    def __init__(self, encoder, n, hidden=(40, 40, 40), **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.encoder.trainable = False
        self.mlp = keras.Sequential(
            [keras.layers.Dense(int(u), activation="relu") for u in hidden]
            + [keras.layers.Dense(n)],
            name="readout",
        )

    def representation(self, images):
        code = self.encoder.encode(images, training=False)
        z = code["mu"] if "mu" in code else next(iter(code.values()))
        return tf.stop_gradient(z)

    def call(self, images):
        return self.mlp(self.representation(images))


# -- the model ----------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="zoo")
class FactorRegressor(ZooModel):
    """Images ``(B, H, W, C)`` in [0, 1] → normalised factors ``(B, n)``; see the module docstring.

    Args:
        architecture: one of :data:`ARCHITECTURES`.
        image_shape: one image, e.g. ``(64, 64, 1)``.
        factor_sizes: K of each factor (n = their number); the full-grid variance of the
            ``r_squared`` metric.
        factor_names: names for messages.
        learning_rate: Adam's.
        backbone_weights: a local keras.applications no-top weights file (transfer models).
        encoder, encoder_weights, hidden: the readout's zoo encoder, its weights (a run
            directory or file) and the MLP widths.
    """

    def __init__(
        self,
        architecture: str = "cnn",
        image_shape: Sequence[int] = (64, 64, 1),
        factor_sizes: Sequence[int] = (3, 6, 40, 32, 32),
        factor_names: Sequence[str] | None = None,
        factors: str | None = None,
        learning_rate: float = 5e-4,
        backbone_weights: str | None = None,
        encoder: str | None = None,
        encoder_weights: str | None = None,
        hidden: Sequence[int] = (40, 40, 40),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if architecture not in ARCHITECTURES:
            raise InvalidConfigError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
            )
        self.architecture = architecture
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise InvalidConfigError(f"image_shape must be (H, W, C), got {image_shape}")
        self.factor_sizes = tuple(int(k) for k in factor_sizes)
        if not self.factor_sizes or min(self.factor_sizes) < 1:
            raise InvalidConfigError(f"factor_sizes must be positive, got {factor_sizes}")
        self.factor_names = tuple(factor_names or (f"factor_{j}" for j in range(self.num_factors)))
        self.factors = factors
        self.learning_rate = float(learning_rate)
        self.backbone_weights = backbone_weights
        self.encoder_name, self.encoder_weights = encoder, encoder_weights
        self.hidden = tuple(int(u) for u in hidden)
        n, shape = self.num_factors, self.image_shape
        if architecture == "mlp":
            self.net = _mlp_body(shape, n)
        elif architecture == "cnn":
            self.net = _cnn_body(shape, n)
        elif architecture == "coordconv":
            self.net = _coordconv_body(shape, n)
        elif architecture == "set_encoder":
            self.net = _set_encoder_body(shape, n)
        elif architecture == "stn":
            self.net = _STNBody(shape, n, name="stn")
        elif architecture in _APPLICATIONS:
            self.net = _ApplicationBody(architecture, shape, n, backbone_weights, name=architecture)
        else:
            self.net = _ReadoutBody(self._load_encoder(), n, self.hidden, name="readout_model")

    def _load_encoder(self) -> keras.Model:
        import zoo

        if not self.encoder_name:
            raise InvalidConfigError(
                "gen_readout needs encoder=NAME, a zoo model with an encode signature "
                "(betavae_sprites, ada_gvae_sprites, slowvae_sprites, pcl_sprites, ...), and "
                "encoder_weights=RUN_DIR for a trained one"
            )
        if self.encoder_weights is not None:  # a run directory carries the encoder's config
            encoder = zoo.load(self.encoder_name, weights=self.encoder_weights)
        else:
            spec = zoo.get_spec(self.encoder_name)
            shape = (
                {"image_shape": self.image_shape} if "image_shape" in spec.default_config else {}
            )
            encoder = zoo.load(self.encoder_name, **shape)
        got = tuple(getattr(encoder, "image_shape", self.image_shape))
        if got != self.image_shape:
            raise InvalidConfigError(
                f"the encoder {self.encoder_name} takes images {got}; the readout is built for "
                f"{self.image_shape}"
            )
        if not callable(getattr(encoder, "encode", None)):
            raise InvalidConfigError(
                f"{self.encoder_name} has no encode(); the readout needs a representation"
            )
        return encoder

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def get_config(self):
        return {
            "name": self.name,
            "architecture": self.architecture,
            "image_shape": list(self.image_shape),
            "factor_sizes": list(self.factor_sizes),
            "factor_names": list(self.factor_names),
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "backbone_weights": self.backbone_weights,
            "encoder": self.encoder_name,
            "encoder_weights": self.encoder_weights,
            "hidden": list(self.hidden),
            **self._identity_config(),
        }

    def build_for_inputs(self) -> FactorRegressor:
        self(tf.zeros((1, *self.image_shape)), training=False)
        return self

    def call(self, images, training=False):
        images = tf.convert_to_tensor(images)
        check_image_batch(images, self.image_shape, self.zoo_name)
        return self.net(images, training=training)

    # -- training ----------------------------------------------------------------------------
    def default_optimizer(self):
        return keras.optimizers.Adam(self.learning_rate)

    def default_loss(self):
        return factor_squared_error

    def default_metrics(self):
        from zoo.eval.generalization import RSquared

        return [RSquared(factor_sizes=self.factor_sizes)]

    def _check_labels(self, data):
        y = data[1] if isinstance(data, tuple | list) and len(data) > 1 else None
        try:
            shape = tuple(y.shape) if y is not None else ()
        except ValueError:  # unknown rank
            shape = ()
        if shape and shape[-1] is not None and shape[-1] != self.num_factors:
            grid = f" for {self.factors!r}" if self.factors else ""
            raise ValueError(
                f"{self.zoo_name} was built{grid} with {self.num_factors} factors; the labels "
                f"have {shape[-1]}. Build it for the dataset's grid: --set factors=BASE "
                f"(e.g. sprites/no_rotation, shapes3d, mpi3d)"
            )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Checked here, where Keras' symbolic build and every train/test step pass the labels.
        self._check_labels((x, y))
        return super().compute_loss(x, y, y_pred, sample_weight, training)

    def head_layers(self):
        head = getattr(self.net, "head", None)
        return [head] if isinstance(head, keras.layers.Layer) else []

    # -- serving -----------------------------------------------------------------------------
    def predict_factors(self, images) -> dict[str, tf.Tensor]:
        """``images (B, H, W, C)`` → ``{"factors": (B, n)}`` (normalised factor estimates)."""
        return {"factors": self(images, training=False)}

    def serving_signatures(self):
        spec = tf.TensorSpec((None, *self.image_shape), tf.float32, name="images")

        def serving_default(images):
            return self.predict_factors(images)

        return {"serving_default": (serving_default, [spec])}


# -- registration ---------------------------------------------------------------------------------
_TRAINING = {"epochs": 10, "batch_size": 64, "eval_split": "test"}
_DATASET = "sprites/extrapolation"
_LEARNING_RATES = {"densenet121": 1e-4}  # App. H: DenseNet with 1e-4, all others 5e-4


def _layout(factors: str | None, image_shape, factor_sizes):
    if factors is None:
        if image_shape is None or factor_sizes is None:
            raise InvalidConfigError("give factors=BASE, or both image_shape and factor_sizes")
        return tuple(image_shape), tuple(factor_sizes), None
    from zoo.data.errors import DatasetError
    from zoo.data.generalization import benchmark_layout

    try:
        shape, grid = benchmark_layout(factors)
    except DatasetError as e:
        raise InvalidConfigError(f"factors={factors!r}: {e}") from e
    return (
        tuple(image_shape) if image_shape is not None else shape,
        tuple(factor_sizes) if factor_sizes is not None else grid.sizes,
        grid.names,
    )


def _build(architecture: str, config: dict[str, Any]) -> FactorRegressor:
    config = dict(config)
    config.pop("architecture", None)  # a closure's locals() include the free variable
    factors = config.pop("factors")
    shape, sizes, names = _layout(factors, config.pop("image_shape"), config.pop("factor_sizes"))
    lr = config.pop("learning_rate")
    if lr is None:
        fine_tuning = config.get("backbone_weights") is not None
        lr = 1e-4 if fine_tuning else _LEARNING_RATES.get(architecture, 5e-4)
    model = FactorRegressor(
        architecture=architecture, image_shape=shape, factor_sizes=sizes, factor_names=names,
        factors=factors, learning_rate=lr, name=building_name(f"gen_{architecture}"), **config,
    )  # fmt: skip
    return model.build_for_inputs()


def _describe(architecture: str) -> str:
    return {
        "mlp": "MLP regressor (90-90-90-90-45) of the benchmark's factors",
        "cnn": "the DisLib CNN regressor (VanillaCNN) of the benchmark's factors",
        "coordconv": "CoordConv regressor (coordinate channels + 6 convs of 16)",
        "set_encoder": "coordinate-based SetEncoder regressor (per-pixel MLP, mean pool)",
        "stn": "spatial transformer (identity-initialised affine sampler) + DisLib CNN",
        "resnet50": "keras.applications ResNet50 + linear head (from scratch, or weights=PATH)",
        "resnet101": "keras.applications ResNet101 + linear head (from scratch, or weights=PATH)",
        "densenet121": "keras.applications DenseNet121 + linear head (from scratch, or "
        "weights=PATH)",
    }[architecture]


def _register(architecture: str) -> None:
    if architecture in _APPLICATIONS:

        def builder(factors="sprites", image_shape=None, factor_sizes=None, learning_rate=None,
                    backbone_weights=None):  # fmt: skip
            return _build(architecture, dict(locals()))
    else:

        def builder(factors="sprites", image_shape=None, factor_sizes=None, learning_rate=None):
            return _build(architecture, dict(locals()))

    name = f"gen_{architecture}"
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = _describe(architecture)
    register_model(
        name, family="generalization", dataset=_DATASET, paper=PAPER, training=_TRAINING,
        description=_describe(architecture) + " (Schott et al. 2022)",
    )(builder)  # fmt: skip
    globals()[name] = builder


for _architecture in ARCHITECTURES[:-1]:
    _register(_architecture)


@register_model(
    "gen_readout", family="generalization", dataset=_DATASET, paper=PAPER,
    training={**_TRAINING, "epochs": 8},
    description="the benchmark's 40-40-40 readout MLP on the frozen encode() output of a zoo "
    "model (β-VAE, Ada-GVAE, SlowVAE, PCL)",
)  # fmt: skip
def gen_readout(factors="sprites", image_shape=None, factor_sizes=None, learning_rate=None,
                encoder="slowvae_sprites", encoder_weights=None, hidden=(40, 40, 40)):  # fmt: skip
    """The paper's readout (App. H): Linear(z, 40) ReLU, 2×[Linear(40, 40) ReLU], Linear(40, n)
    on the frozen μ of ``encoder`` (with ``encoder_weights``), trained 8 epochs with Adam."""
    return _build("readout", dict(locals()))
