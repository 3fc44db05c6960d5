"""The zoo's trainer: one loop for every tf.distribute strategy.

``python training/train.py --model NAME [--dataset D] [--data-dir DIR] [--epochs N]
[--steps-per-epoch N] [--batch-size N] [--strategy auto|one_device|mirrored|multi_worker]
[--output DIR] [--export-dir BASE] [--init-from RUN_DIR] [--mixed-precision off|bfloat16|float16]
[--jit-compile] [--set key=value ...]`` (also installed as ``zoo-train``).

Why the zoo owns its loop: Keras 3's ``model.fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585, tensorflow/tensorflow#72388). Calling the model's own ``train_step``
inside ``strategy.run`` from a ``tf.function`` works on every strategy, so that is the loop:

- the model, its optimizer and its compiled metrics are built before the first step;
- each replica runs ``model.train_step`` on its share of the global batch; Keras scales the loss
  by the number of replicas and the optimizer all-reduces the gradients;
- per-step logs are the mean over replicas (what ``fit`` shows); epoch-end logs are read from the
  metric variables in cross-replica context, which sums their totals and counts exactly;
- ``--init-from RUN_DIR`` starts from another run's weights (the second phase of a two-phase
  protocol, or a transfer task). For the same model the run's config is the base and ``--set``
  changes it; weights are paired by their place in the model (``zoo.presets.load_into``), the
  model's declared head keeps its fresh initialisation when its shape differs (a different label
  set), as do weights the run does not have; both are listed in ``config.json``;
- Keras callbacks are driven through ``keras.callbacks.CallbackList``: progress bar, TensorBoard
  (``logs/``), ``BackupAndRestore`` (``backup/``; a killed run resumes from the last completed
  epoch), ``ModelCheckpoint`` (``checkpoints/``) and a stop on NaN.

``--mixed-precision`` applies :mod:`zoo.precision` to the model before it is compiled: the
model's declared blocks compute in bfloat16 or float16, everything else (losses, metrics, softmax,
log-dets, searches) in float32; float16 adds dynamic loss scaling to every optimizer the model
creates; a model that cannot honour the precision refuses it (a usage error). What was applied is
in ``config.json`` under ``precision``. ``--jit-compile`` compiles each replica's step with XLA;
a step XLA cannot compile is run without it after a warning naming the op (``config.json``'s
``jit_compile`` says which ran). ``history.json`` records images/s in total and per replica and
the device kind.

Under ``multi_worker`` every worker runs the same code; only the chief writes into ``--output``
and ``--export-dir``. The others write their (collective) saves into a temporary directory that
is deleted at the end, the pattern of the TensorFlow multi-worker tutorial.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
WEIGHTS_FILENAME = "weights.weights.h5"

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "UsageError",
    "train",
    "make_strategy",
    "main",
]


class UsageError(ValueError):
    """A bad command line or configuration (the CLI exits with status 2)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training was stopped."""


@dataclass
class TrainConfig:
    """Everything one training run needs. Fields left None take the model spec's defaults."""

    model: str
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    batch_size: int | None = None
    strategy: str = "auto"
    output: str | None = None
    export_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    cpu_devices: int | None = None
    train_examples: int | None = None
    verbose: int = 1
    callbacks: list[Any] = field(default_factory=list)  # extra keras.callbacks.Callback objects
    init_from: str | None = None  # a run directory (or weights file) to start from
    mixed_precision: str = "off"  # "off", "bfloat16" or "float16" (zoo.precision)
    jit_compile: bool = False  # compile each replica's train step with XLA


@dataclass
class TrainResult:
    model: Any
    chief: bool
    metrics: dict[str, float]
    history: dict[str, list[float]]
    output: Path | None
    export_path: Path | None
    initial_epoch: int
    steps_per_second: float | None
    images_per_second: float | None = None
    jit_compile: bool = False  # whether the XLA-compiled step ran (False after a fallback)


# -- strategies ----------------------------------------------------------------------------------
def _split_cpu(n: int) -> None:
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as e:  # the runtime is already initialised
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != n:
            raise UsageError(
                f"--cpu-devices {n}: TensorFlow is already initialised with {existing} CPU "
                f"device(s); set it before any TensorFlow op runs ({e})"
            ) from e


def _tf_config() -> dict[str, Any]:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise UsageError(f"TF_CONFIG is not valid JSON: {e}") from e


def make_strategy(kind: str = "auto", cpu_devices: int | None = None):
    """The ``tf.distribute.Strategy`` for ``kind``.

    ``auto``: ``multi_worker`` when ``TF_CONFIG`` names more than one task, ``mirrored`` with more
    than one GPU, else ``one_device``. ``cpu_devices`` splits the CPU into that many logical
    devices first, so ``mirrored`` can be exercised without GPUs.
    """
    import tensorflow as tf

    if kind not in STRATEGIES:
        raise UsageError(f"unknown strategy {kind!r}; choose one of {', '.join(STRATEGIES)}")
    if cpu_devices is not None:
        if cpu_devices < 1:
            raise UsageError(f"--cpu-devices must be at least 1, got {cpu_devices}")
        _split_cpu(cpu_devices)
    cluster = _tf_config().get("cluster", {})
    n_tasks = sum(len(v) for v in cluster.values())
    # Physical, not logical, devices: listing logical ones initialises the runtime, after which
    # MultiWorkerMirroredStrategy can no longer configure its collective ops.
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "auto":
        kind = "multi_worker" if n_tasks > 1 else "mirrored" if len(gpus) > 1 else "one_device"
    if kind == "multi_worker":
        if not cluster:
            raise UsageError(
                "--strategy multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
        return tf.distribute.MirroredStrategy(devices)
    device = "/gpu:0" if gpus else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` makes this process a non-chief worker."""
    task = _tf_config().get("task", {})
    cluster = _tf_config().get("cluster", {})
    task_type, index = task.get("type"), task.get("index", 0)
    if not task_type:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in cluster


# -- callbacks -----------------------------------------------------------------------------------
def _stop_on_nan_callback():
    import keras

    class StopOnNaN(keras.callbacks.TerminateOnNaN):
        """``TerminateOnNaN`` that also remembers where the loss diverged."""

        diverged_at: tuple[int, int] | None = None
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.diverged_at = (self.epoch, batch)
            super().on_batch_end(batch, logs)

    return StopOnNaN()


# -- the loop ------------------------------------------------------------------------------------
def _build_training_state(model, batch) -> None:
    """Create the optimizer and compiled metric/loss variables before the first distributed step.

    Under MultiWorkerMirroredStrategy variables must not be created lazily inside
    ``strategy.run``. Keras' own symbolic build does this with KerasTensors, so no data flows.
    """
    model._symbolic_build(data_batch=batch)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _reduce_logs(strategy, logs):
    import tensorflow as tf

    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in logs.items()}


def _to_floats(logs) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items()}


def _check_output(output: Path, record: dict[str, Any]) -> None:
    """Refuse to resume a run directory that belongs to another model or config."""
    previous = output / "config.json"
    if not previous.is_file():
        return
    old = json.loads(previous.read_text())
    defaults = {"mixed_precision": "off"}  # runs written before the flag existed
    for key in ("model", "config", "dataset", "mixed_precision"):
        if old.get(key, defaults.get(key)) != record.get(key):
            raise UsageError(
                f"--output {output} holds a run with a different {key} "
                f"({old.get(key)!r} vs {record.get(key)!r}); its backup cannot be resumed. "
                f"Choose a new --output."
            )


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.model`` with the zoo's loop; see the module docstring."""
    import keras
    import tensorflow as tf

    import zoo
    import zoo.data
    from zoo.export import export_model
    from zoo.precision import MODES, PrecisionError, apply_mixed_precision

    try:
        spec = zoo.get_spec(cfg.model)
        init = _read_init_from(cfg.init_from, spec.name) if cfg.init_from else None
        base = init["config"] if init and init["model"] == spec.name else {}
        config = spec.config(**{**base, **cfg.overrides})
    except (zoo.UnknownModelError, zoo.InvalidConfigError) as e:
        raise UsageError(str(e)) from e
    dataset = cfg.dataset or spec.dataset
    if dataset is None:
        raise UsageError(f"{spec.name} has no default dataset; pass --dataset")
    try:
        zoo.data.check_dataset_name(dataset)
    except zoo.data.UnknownDatasetError as e:
        raise UsageError(str(e)) from e
    epochs = cfg.epochs if cfg.epochs is not None else spec.training["epochs"]
    batch_size = cfg.batch_size or spec.training["batch_size"]
    if epochs < 1 or batch_size < 1:
        raise UsageError(f"--epochs and --batch-size must be positive (got {epochs}, {batch_size})")
    if cfg.mixed_precision not in MODES:
        raise UsageError(
            f"--mixed-precision {cfg.mixed_precision!r}: choose one of {', '.join(MODES)}"
        )

    strategy = make_strategy(cfg.strategy, cfg.cpu_devices)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(
            f"--batch-size {batch_size} is the global batch and must divide evenly over "
            f"{replicas} replicas"
        )
    chief = is_chief()
    output = Path(cfg.output) if cfg.output else Path("runs") / spec.name
    # Non-chief workers take part in every (collective) save, but into a scratch directory.
    write_dir = output if chief else Path(tempfile.mkdtemp(prefix="zoo-worker-"))

    record = {
        "model": spec.name,
        "family": spec.family,
        "config": json.loads(json.dumps(config, default=list)),
        "dataset": dataset,
        "data_dir": cfg.data_dir,
        "epochs": epochs,
        "batch_size": batch_size,
        "steps_per_epoch": cfg.steps_per_epoch,
        "validation_steps": cfg.validation_steps,
        "train_examples": cfg.train_examples,
        "strategy": cfg.strategy,
        "strategy_class": type(strategy).__name__,
        "num_replicas": replicas,
        "seed": cfg.seed,
        "mixed_precision": cfg.mixed_precision,
        "precision": None,
        "jit_compile": {"requested": bool(cfg.jit_compile), "used": False, "fallback": None},
        "init_from": None,
        "zoo_version": zoo.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    if chief:
        _check_output(output, record)

    # Build first: a config the builder rejects is a usage error, found before any data loads.
    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
        try:
            model = zoo.build(spec.name, **config)
        except zoo.InvalidConfigError as e:
            raise UsageError(str(e)) from e
        try:
            record["precision"] = apply_mixed_precision(model, cfg.mixed_precision)
        except PrecisionError as e:
            raise UsageError(f"--mixed-precision {cfg.mixed_precision}: {e}") from e
        model.compile()
        if init is not None:
            record["init_from"] = _initialize_from(model, init)
    if chief:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(record, indent=2))

    train_split, eval_split = spec.training["train_split"], spec.training["eval_split"]
    train_ds = zoo.data.load(
        dataset,
        train_split,
        batch_size=batch_size,
        data_dir=cfg.data_dir,
        shuffle=True,
        seed=cfg.seed,
        num_examples=cfg.train_examples,
        repeat=True,
        drop_remainder=True,
        class_balanced=spec.training["class_balanced"],
    )
    n_train = zoo.data.num_examples_of(dataset, train_split, cfg.data_dir, cfg.train_examples)
    steps_per_epoch = cfg.steps_per_epoch or max(1, n_train // batch_size)
    val_ds = zoo.data.load(
        dataset, eval_split, batch_size=batch_size, data_dir=cfg.data_dir, shuffle=False
    )
    if cfg.validation_steps:
        val_ds = val_ds.take(cfg.validation_steps)

    with strategy.scope():
        first_batch = next(iter(train_ds.take(1)))
        _build_training_state(model, first_batch)

    dist_train = iter(strategy.experimental_distribute_dataset(train_ds))

    def make_train_step(jit: bool):
        # XLA compiles each replica's step; the iterator and the cross-replica reduction stay
        # outside it (neither compiles), as in Keras' own trainer.
        step = tf.function(model.train_step, jit_compile=True) if jit else model.train_step

        @tf.function
        def train_step(iterator):
            return _reduce_logs(strategy, strategy.run(step, args=(next(iterator),)))

        @tf.function
        def train_on_batch(batch):
            return _reduce_logs(strategy, strategy.run(step, args=(batch,)))

        return train_step, train_on_batch

    jit = cfg.jit_compile
    if jit and replicas > 1:
        # The optimizer's all-reduce (tf.distribute's merge_call) cannot run inside an XLA
        # cluster, and a per-replica compiled step reaches the other replicas' variables (XLA's
        # "tf.Variable on a different device"); Keras' own trainer turns XLA off under
        # tf.distribute for the same reason.
        jit = False
        record["jit_compile"]["fallback"] = (
            f"{replicas} replicas: XLA cannot compile a step whose optimizer all-reduces across "
            f"replicas"
        )
        print(f"zoo-train: warning: --jit-compile: {record['jit_compile']['fallback']}; "
              f"training without XLA (XLA runs with one replica)", file=sys.stderr)  # fmt: skip
    train_step, first_step = make_train_step(jit)
    jit_pending = jit  # the first XLA step decides whether XLA is used

    def run_first_jit_step():
        nonlocal train_step, jit_pending
        jit_pending = False
        batch = next(dist_train)  # fetched here, so a fallback retries the same batch
        try:
            logs = first_step(batch)
            record["jit_compile"]["used"] = True
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                tf.errors.InternalError, ValueError, TypeError, NotImplementedError) as e:  # fmt: skip
            reason = _xla_failure(e)
            if reason is None:
                raise
            record["jit_compile"].update(used=False, fallback=reason)
            print(f"zoo-train: warning: --jit-compile: {spec.name}'s step does not compile "
                  f"with XLA ({reason}); training without XLA", file=sys.stderr)  # fmt: skip
            train_step, retry = make_train_step(False)
            logs = retry(batch)
        if chief:
            (output / "config.json").write_text(json.dumps(record, indent=2))
        return logs

    @tf.function
    def test_step(batch):
        logs = strategy.run(model.test_step, args=(batch,))
        return _reduce_logs(strategy, logs)

    state = [v for v in model.non_trainable_variables if v.dtype.startswith("float")]

    @tf.function
    def average_replica_state():
        # Keras 3 creates BatchNorm moving statistics (and other non-trainable state) with
        # aggregation "none", so each replica keeps its own copy and the workers of a multi-worker
        # run drift apart. Averaging them once per epoch restores what tf.keras 2 did
        # (aggregation MEAN): every replica, on every worker, ends with the same weights.
        def fn():
            ctx = tf.distribute.get_replica_context()
            for v in state:
                mean = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v.value))
                v.value.assign(mean)  # the tf.Variable: each replica sets its own copy

        strategy.run(fn)

    def cross_replica_metrics():
        # Metric variables are ON_READ/SUM: reading them here sums totals and counts exactly.
        with strategy.scope():
            return _to_floats(model.get_metrics_result())

    from zoo.runtime import device_kind

    devices = list(strategy.extended.worker_devices)
    kind = device_kind(devices[0] if devices else None)

    def throughput() -> dict[str, Any]:
        # images/s of the last epoch (its first step, which traces, excluded), as Model Garden
        # and timm report it: the global batch per step, in total and per replica.
        rate = timing[-1] * batch_size if timing else None
        return {
            "images_per_second": rate,
            "images_per_second_per_replica": rate / replicas if rate else None,
            "images_per_second_per_epoch": [r * batch_size for r in timing],
            "global_batch_size": batch_size,
            "num_replicas": replicas,
            "device_kind": kind,
            "devices": devices,
            "mixed_precision": cfg.mixed_precision,
            "jit_compile": record["jit_compile"]["used"],
        }

    nan_stop = _stop_on_nan_callback()
    callbacks = [
        # Before the backup: once the backup says an epoch is done, its checkpoint is on disk (a
        # kill between the two writes used to resume past an epoch whose checkpoint was never
        # written).
        keras.callbacks.ModelCheckpoint(
            str(write_dir / "checkpoints" / "epoch-{epoch:03d}.weights.h5"),
            save_weights_only=True,
        ),
        # double_checkpoint keeps the previous backup, so a kill during a save loses nothing.
        keras.callbacks.BackupAndRestore(
            str(write_dir / "backup"), delete_checkpoint=False, double_checkpoint=True
        ),
        nan_stop,
        *model.training_callbacks(),
        *cfg.callbacks,
    ]
    if chief:
        callbacks.append(
            keras.callbacks.TensorBoard(
                str(output / "logs"), write_graph=False, update_freq="epoch"
            )
        )
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=bool(cfg.verbose) and chief,
        model=model,
        verbose=cfg.verbose if chief else 0,
        epochs=epochs,
        steps=steps_per_epoch,
    )

    model.stop_training = False
    model._initial_epoch = None
    callback_list.on_train_begin()
    initial_epoch = model._initial_epoch or 0
    if initial_epoch and chief and cfg.verbose:
        print(f"Resuming after epoch {initial_epoch}/{epochs} (backup in {output / 'backup'})")
    # The history file may be an epoch ahead of the backup if a kill fell between the two writes.
    history = _load_history(output, initial_epoch) if initial_epoch and chief else {}
    epoch_logs: dict[str, float] = {}
    timing = []
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        start = None
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = _to_floats(run_first_jit_step() if jit_pending else train_step(dist_train))
            if step == 0:
                start = time.perf_counter()  # exclude tracing from the steps/s figure
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        if steps_per_epoch > 1 and start is not None:
            timing.append((steps_per_epoch - 1) / (time.perf_counter() - start))
        if nan_stop.diverged_at is not None:
            break
        if replicas > 1 and state:
            average_replica_state()
        epoch_logs = cross_replica_metrics()
        model.reset_metrics()
        callback_list.on_test_begin()
        for step, batch in enumerate(strategy.experimental_distribute_dataset(val_ds)):
            callback_list.on_test_batch_begin(step)
            callback_list.on_test_batch_end(step, _to_floats(test_step(batch)))
        val_logs = cross_replica_metrics()
        callback_list.on_test_end(val_logs)
        epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        for k, v in epoch_logs.items():
            history.setdefault(k, []).append(v)
        if chief:  # written every epoch, so a killed run keeps the history of its epochs
            _write_history(output, history, timing, throughput())
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(epoch_logs)

    if nan_stop.diverged_at is not None:
        ep, batch = nan_stop.diverged_at
        raise TrainingDiverged(
            f"training stopped: the loss became NaN or infinite at epoch {ep + 1}, batch {batch}. "
            f"Lower the learning rate (--set learning_rate=...) or check the data."
        )

    steps_per_second = timing[-1] if timing else None
    if not epoch_logs and initial_epoch >= epochs:
        # Nothing left to train (the backup is at or past --epochs): report the saved figures.
        previous = output / "metrics.json"
        epoch_logs = json.loads(previous.read_text()) if previous.is_file() else {}
    metrics = {k: v for k, v in epoch_logs.items() if k != "epoch"}
    model.save_weights(str(write_dir / WEIGHTS_FILENAME))
    export_path = None
    if chief:
        (output / "metrics.json").write_text(json.dumps({**metrics, "epoch": epochs}, indent=2))
        _write_preset_metadata(output, spec, record, metrics)
        _write_history(output, history, timing, throughput())
        if cfg.export_dir:
            # Export a plain single-device copy, so the SavedModel holds no distributed variables.
            plain = zoo.load(spec.name, weights=output, **config)
            export_path = export_model(
                plain,
                cfg.export_dir,
                metadata={"metrics": metrics, "training": record},
            )
    else:
        shutil.rmtree(write_dir, ignore_errors=True)
    return TrainResult(
        model=model,
        chief=chief,
        metrics=metrics,
        history=history,
        output=output if chief else None,
        export_path=export_path,
        initial_epoch=initial_epoch,
        steps_per_second=steps_per_second,
        images_per_second=steps_per_second * batch_size if steps_per_second else None,
        jit_compile=bool(record["jit_compile"]["used"]),
    )


def _read_init_from(path: str, model_name: str) -> dict[str, Any]:
    """What ``--init-from`` names: ``{"path", "weights", "model", "config"}``.

    Anything ``zoo.load(weights=...)`` accepts (read by :func:`zoo.presets.locate`): a preset
    (a run directory), whose ``config.json`` gives the model and config; a weights file or
    manifest tag, taken to be ``model_name``'s with its default config.
    """
    from zoo.presets import locate
    from zoo.weights import WeightsError

    try:
        source = locate(model_name, path)
    except WeightsError as e:
        raise UsageError(f"--init-from: {e}") from e
    return {
        "path": str(path),
        "weights": str(source.weights),
        "model": source.model or model_name,
        "config": source.config,
    }


def _initialize_from(model, init: dict[str, Any]) -> dict[str, Any]:
    """Load ``init``'s weights into ``model`` (:func:`zoo.presets.load_into` with
    ``partial=True``): paired by structural path, so layer names never matter; the model's
    declared head keeps its fresh initialisation when its shape differs (another label set),
    as do weights the run does not have (an iCE model's nuisance classifier after a CE run).

    Returns what was done, for ``config.json``; raises UsageError when the weights do not fit
    or nothing fits.
    """
    from zoo.presets import load_into
    from zoo.weights import WeightsError

    try:
        report = load_into(model, init["weights"], partial=True)
    except WeightsError as e:
        raise UsageError(f"--init-from {init['path']}: {e}") from e
    if not report.copied:
        raise UsageError(
            f"--init-from {init['path']}: none of its weights ({init['model']}) fits "
            f"{model.zoo_name}; names and shapes must agree"
        )
    return {
        "path": init["path"],
        "model": init["model"],
        "config": init["config"],
        "copied": len(report.copied),
        "reinitialized": report.reinitialized,
        "head": report.head,
        "unused": len(report.unused),
    }


def _write_preset_metadata(output: Path, spec, record: dict[str, Any], metrics) -> None:
    """``metadata.json``: the run directory is a preset (:mod:`zoo.presets`)."""
    from zoo.presets import write_metadata

    source = {"kind": "zoo-train", "dataset": record["dataset"], "epochs": record["epochs"],
              "init_from": (record["init_from"] or {}).get("path")}  # fmt: skip
    write_metadata(output, model=spec.name, source=source, metrics=metrics, paper=spec.paper)


def weights_fingerprint(model) -> str:
    """sha256 over the model's weights (not the optimizer's): equal iff the weights are equal."""
    import hashlib

    h = hashlib.sha256()
    for w in model.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()


def _load_history(output: Path, epochs: int) -> dict[str, list[float]]:
    f = output / "history.json"
    if not f.is_file():
        return {}
    return {k: v[:epochs] for k, v in json.loads(f.read_text()).get("history", {}).items()}


def _xla_failure(error: Exception) -> str | None:
    """What XLA could not compile, from the error of a jit-compiled step, or None when the error
    is not XLA's (it is then re-raised)."""
    import re

    text = str(error)
    if "XLA" not in text and "xla" not in text and "compil" not in text:
        return None
    for pattern in (
        r"No registered '(\w+)' OpKernel for XLA",
        r"Detected unsupported operations when trying to compile graph[^:]*:\s*([\w/]+)",
        r"unsupported op[^:]*:\s*([\w/]+)",
        r"op ([\w/]+) is not supported",
    ):
        m = re.search(pattern, text)
        if m:
            return f"op {m.group(1)}"
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("Graph execution error", "Detected at"))
    ]
    return (lines[0] if lines else type(error).__name__)[:300]


def _write_history(
    output: Path, history: dict[str, list[float]], timing: list[float], throughput=None
) -> None:
    tmp = output / "history.json.tmp"
    record = {"history": history, "steps_per_second": timing, "throughput": throughput or {}}
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, output / "history.json")


# -- CLI -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from zoo.cli_utils import add_overrides_argument

    p = argparse.ArgumentParser(
        prog="zoo-train",
        description="Train a zoo model on tf.distribute, with checkpoints, backup, TensorBoard "
        "logs and an optional versioned SavedModel export.",
    )
    p.add_argument("--model", required=True, help="registered model name (zoo.list_models())")
    p.add_argument("--dataset", help="zoo or TFDS dataset (default: the model's own)")
    p.add_argument("--data-dir", help="where prepared TFDS data or dataset files live")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the model's)")
    p.add_argument("--steps-per-epoch", type=int, help="steps per epoch (default: one pass)")
    p.add_argument("--validation-steps", type=int, help="eval batches per epoch (default: all)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the model's)")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES)
    p.add_argument(
        "--cpu-devices",
        type=int,
        help="split the CPU into N logical devices (to run 'mirrored' without GPUs)",
    )
    p.add_argument("--output", help="run directory (default: runs/MODEL)")
    p.add_argument("--export-dir", help="also export to EXPORT_DIR/MODEL/<next version>")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and data order")
    p.add_argument(
        "--train-examples", type=int, help="use only the first N training examples (quick runs)"
    )
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from this run's weights (a zoo-train --output directory or a .weights.h5 "
        "file); for the same model its config is the base that --set changes. E.g. the second "
        "phase of racecar training: --set phase=2 --init-from runs/phase1",
    )
    p.add_argument(
        "--mixed-precision",
        default="off",
        choices=("off", "bfloat16", "float16"),
        help="compute the model's declared blocks in bfloat16 or float16 (float16 adds dynamic "
        "loss scaling); losses, metrics and the parts a model keeps float32 stay float32; a "
        "model that cannot honour it refuses. What was applied is in config.json",
    )
    p.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile each replica's train step with XLA; a step that does not compile falls "
        "back to no XLA with a warning naming the op",
    )
    add_overrides_argument(p)
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return p


def main(argv: list[str] | None = None) -> int:
    from zoo.cli_utils import announce_runtime, parse_overrides, start_cli

    start_cli("zoo-train")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as e:
        parser.error(str(e))
    cfg = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps,
        batch_size=args.batch_size,
        strategy=args.strategy,
        output=args.output,
        export_dir=args.export_dir,
        overrides=overrides,
        seed=args.seed,
        cpu_devices=args.cpu_devices,
        train_examples=args.train_examples,
        verbose=args.verbose,
        init_from=args.init_from,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
    )
    from zoo.data import DatasetError
    from zoo.weights import WeightsError

    announce_runtime("zoo-train")
    try:
        result = train(cfg)
    except UsageError as e:
        parser.error(str(e))  # exits with status 2
    except (TrainingDiverged, DatasetError, WeightsError) as e:
        print(f"zoo-train: error: {e}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {"output": str(result.output) if result.chief else None}
    summary.update(result.metrics)
    if result.export_path is not None:
        summary["export"] = str(result.export_path)
    if result.steps_per_second:
        summary["steps_per_second"] = round(result.steps_per_second, 2)
        summary["images_per_second"] = round(result.images_per_second, 1)
    summary["chief"] = result.chief
    summary["weights_fingerprint"] = weights_fingerprint(result.model)
    print(json.dumps(summary))
    return 0


__all__ += ["is_chief", "build_parser"]
