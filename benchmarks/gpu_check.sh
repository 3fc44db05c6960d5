#!/usr/bin/env bash
# End-to-end check of a GPU machine, in under 10 minutes on one: prints one JSON object.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# 1. one epoch of cnn_mnist on one GPU, then mirrored over every GPU (bfloat16, XLA on one GPU);
# 2. one bfloat16 training step of fiRevNet48 at batch 8, and its round-trip error;
# 3. ABS inference throughput (benchmarks/abs_inference.py);
# 4. the reversible-memory benchmark at 12 and 48 blocks (benchmarks/reversible_memory.py).
#
# It runs on a CPU too, slowly but correctly (mirrored then splits the CPU into two logical
# devices); CI does not run it. DATASET=mnist uses TFDS MNIST (prepared under DATA_DIR) instead
# of the procedural digits; EPOCH_STEPS caps the epoch (default: a full pass).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d -t zoo-gpu-check-XXXX)}
mkdir -p "$out"
dataset=${DATASET:-digits}
data_dir=${DATA_DIR:+--data-dir "$DATA_DIR"}
steps=${EPOCH_STEPS:+--steps-per-epoch "$EPOCH_STEPS"}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
start=$(date +%s)

gpus=$(python -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))")
split=""
if [ "$gpus" -lt 2 ]; then split="--cpu-devices 2"; fi

# shellcheck disable=SC2086
python training/train.py --model cnn_mnist --dataset "$dataset" $data_dir $steps --epochs 1 \
    --strategy one_device --mixed-precision bfloat16 --jit-compile --verbose 0 \
    --output "$out/cnn_one" | tail -n 1 > "$out/cnn_one.json"
# shellcheck disable=SC2086
python training/train.py --model cnn_mnist --dataset "$dataset" $data_dir $steps --epochs 1 \
    --strategy mirrored $split --mixed-precision bfloat16 --verbose 0 \
    --output "$out/cnn_mirrored" | tail -n 1 > "$out/cnn_mirrored.json"

python - "$out/firevnet48.json" <<'EOF'
"""One bfloat16 training step of fiRevNet48 at batch 8, and the round trip of that batch."""
import json
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.precision import apply_mixed_precision
from zoo.runtime import device_kind
from zoo.training import _build_training_state

keras.utils.set_random_seed(0)
model = zoo.load("fiRevNet48")
model.build_for_inputs()
report = apply_mixed_precision(model, "bfloat16")
model.compile()
x = tf.random.uniform((8, *model.image_shape))
y = tf.constant(np.arange(8) % model.num_classes, tf.int64)
_build_training_state(model, (x, y))
step = tf.function(model.train_step)
t0 = time.perf_counter()
logs = step((x, y))
first = time.perf_counter() - t0
t0 = time.perf_counter()
logs = step((x, y))
second = time.perf_counter() - t0
error = float(tf.reduce_max(tf.abs(model.inverse(model.forward(x)) - x)))
print(json.dumps({
    "device": device_kind(), "policy": report["policy"],
    "mixed_blocks": len(report["mixed_blocks"]), "loss": float(logs["loss"]),
    "loss_finite": bool(np.isfinite(float(logs["loss"]))),
    "first_step_s": round(first, 2), "step_s": round(second, 3),
    "images_per_s": round(8 / second, 2), "round_trip_max_abs_error": error,
    "round_trip_below_1e-4": error < 1e-4,
}), file=open(sys.argv[1], "w"))
EOF

python benchmarks/abs_inference.py --repeats 1 | tail -n 1 > "$out/abs_inference.json"
python benchmarks/reversible_memory.py | tail -n 1 > "$out/reversible_memory.json"

python - "$out" "$start" <<'EOF'
import json
import sys
import time
from pathlib import Path

out = Path(sys.argv[1])
from zoo.runtime import describe, device_kind  # noqa: E402

def read(name):
    text = (out / f"{name}.json").read_text().strip()
    return json.loads(text) if text else None

def throughput(run):
    history = json.loads((out / run / "history.json").read_text())
    config = json.loads((out / run / "config.json").read_text())
    return {**history["throughput"], "jit_compile": config["jit_compile"],
            "precision": config["precision"]["policy"], "metrics": read(run)}

print(json.dumps({
    "machine": {**describe(), "device_kind": device_kind()},
    "cnn_mnist_one_device": throughput("cnn_one"),
    "cnn_mnist_mirrored": throughput("cnn_mirrored"),
    "firevnet48_bfloat16_step": read("firevnet48"),
    "abs_inference": read("abs_inference"),
    "reversible_memory": read("reversible_memory"),
    "seconds": round(time.time() - float(sys.argv[2]), 1),
}))
EOF
