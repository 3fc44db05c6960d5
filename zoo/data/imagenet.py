"""ImageNet for the noise-training ResNet50s, and the released ImageNet-C files.

- ``imagenet``: TFDS ``imagenet2012`` (a manual download; ``--data-dir`` holds the prepared
  data) as 224×224×3 float images in [0, 1]. Train: a random resized crop (area 8–100 %, aspect
  3/4–4/3) and a horizontal flip, drawn anew every epoch; validation: resize the shorter side to
  256 and take the central 224×224 (torchvision's protocol, which the paper's models use; digest
  c.2). Streamed: never cached in memory.
- :func:`imagenet_c_folder`: the released ImageNet-C JPEGs (Hendrycks & Dietterich), laid out as
  ``DIR/<corruption>/<severity>/<wnid>/*.JPEG``, labelled by the sorted WordNet ids (the order of
  TFDS ``imagenet2012``'s labels). These files are what the paper's ImageNet-C figures use
  (pitfall 9); TFDS ``imagenet2012_corrupted`` instead regenerates the corruptions from the
  ImageNet validation set with its own code and crop, so its figures differ.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from zoo.data.core import register_dataset, tfds_source
from zoo.data.errors import DatasetError

__all__ = ["imagenet_c_folder", "train_crop", "eval_crop", "IMAGE_SIZE"]

IMAGE_SIZE = 224


def train_crop(image: tf.Tensor, size: int = IMAGE_SIZE) -> tf.Tensor:
    """torchvision's RandomResizedCrop(224) + RandomHorizontalFlip on one image."""
    begin, extent, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10, use_image_if_no_bounding_boxes=True,
    )  # fmt: skip
    crop = tf.slice(image, begin, extent)
    crop = tf.image.resize(crop, [size, size], method="bilinear", antialias=True)
    return tf.image.random_flip_left_right(tf.clip_by_value(crop, 0.0, 1.0))


def eval_crop(image: tf.Tensor, size: int = IMAGE_SIZE, resize: int = 256) -> tf.Tensor:
    """Resize the shorter side to ``resize`` and take the central ``size``×``size``."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new, method="bilinear", antialias=True)
    top = (new[0] - size) // 2
    left = (new[1] - size) // 2
    return tf.clip_by_value(image[top : top + size, left : left + size], 0.0, 1.0)


@register_dataset(
    "imagenet",
    splits=("train", "validation"),
    description="ImageNet via TFDS imagenet2012 (manual download, --data-dir), 224x224x3: random "
    "resized crops for train, resize 256 + centre crop 224 for validation",
    streamed=True,
)
def _imagenet(split, data_dir, num_examples, seed, download):
    ds = tfds_source(
        "imagenet2012", split, data_dir, download,
        extra_hint=" (imagenet2012 needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
        "TFDS' manual directory; prepare it once with tfds build imagenet2012)",
    )  # fmt: skip
    crop = train_crop if split.startswith("train") else eval_crop
    return ds.map(lambda x, y: (crop(x), y), num_parallel_calls=tf.data.AUTOTUNE)


def imagenet_c_folder(data_dir: str | os.PathLike, corruption: str, severity: int,
                      num_examples: int | None = None) -> tf.data.Dataset:  # fmt: skip
    """Unbatched ``(image float32 in [0, 1] (224, 224, 3), label int64)`` of one released
    ImageNet-C set, ``data_dir/corruption/severity/<wnid>/*``, labels by sorted wnid.

    ``num_examples``: that many images, evenly spaced over the sorted files (every class keeps
    its share). The released images are already 224×224; others are centre-cropped or padded.
    """
    root = Path(data_dir) / corruption / str(int(severity))
    if not root.is_dir():
        raise DatasetError(
            f"no ImageNet-C folder {root}: data_dir must hold the released ImageNet-C sets as "
            f"<corruption>/<severity>/<wnid>/*.JPEG (the tar files of Hendrycks & Dietterich)"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for label, wnid in enumerate(classes):
        for f in sorted((root / wnid).iterdir()):
            files.append(str(f))
            labels.append(label)
    if not files:
        raise DatasetError(f"no images under {root}")
    if num_examples is not None and num_examples < len(files):
        # Evenly spaced over the sorted files, so a subset still covers every class.
        keep = [round(i * len(files) / num_examples) for i in range(num_examples)]
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]

    def read(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.convert_image_dtype(image, tf.float32)
        image = tf.image.resize_with_crop_or_pad(image, IMAGE_SIZE, IMAGE_SIZE)
        image.set_shape((IMAGE_SIZE, IMAGE_SIZE, 3))
        return image, tf.cast(label, tf.int64)

    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
