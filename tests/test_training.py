"""The trainer and its CLI: outputs, usage errors, NaN stop, resume after SIGKILL, learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

import zoo
from zoo.training import TrainConfig, TrainingDiverged, UsageError, main, train


def test_weights_of_a_run_reload_into_zoo_load(trained_run):
    run = trained_run
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    reloaded = zoo.load("cnn_mnist", weights=run.output)
    np.testing.assert_allclose(
        reloaded(x, training=False), run.model(x, training=False), rtol=1e-5, atol=1e-5
    )


def test_metrics_json_matches_keras_evaluate(trained_run):
    """val_* in metrics.json are exact figures over the eval split, as model.evaluate gives."""
    import zoo.data

    metrics = json.loads((trained_run.output / "metrics.json").read_text())
    model = zoo.load("cnn_mnist", weights=trained_run.output)
    model.compile()
    ds = zoo.data.load("digits", "test", batch_size=32, shuffle=False).take(4)
    evaluated = model.evaluate(ds, verbose=0, return_dict=True)
    assert metrics["val_accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(evaluated["loss"], rel=1e-4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "cnn_mnsit"], "cnn_mnist"),
        (["--model", "cnn_mnist", "--dataset", "mnsit"], "mnist"),
        (["--model", "cnn_mnist", "--strategy", "tpu"], "invalid choice"),
        (["--model", "cnn_mnist", "--set", "filterz=3"], "Valid keys"),
        (["--model", "cnn_mnist", "--set", "nokeyvalue"], "KEY=VALUE"),
        (["--model", "cnn_mnist", "--set", "optimizer=nope"], "unknown optimizer"),
        (["--model", "cnn_mnist", "--strategy", "multi_worker"], "TF_CONFIG"),
    ],
)
def test_usage_errors_exit_2_with_message(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--output", str(tmp_path / "r"), "--epochs", "1"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_nan_loss_stops_training_and_cli_exits_nonzero(capsys, tmp_path):
    args = [
        "--model", "linear_mnist", "--dataset", "digits", "--epochs", "3",
        "--steps-per-epoch", "20", "--batch-size", "32", "--train-examples", "640",
        "--output", str(tmp_path / "r"), "--verbose", "0",
        "--set", "learning_rate=1e38", "--set", "optimizer=sgd",
    ]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "NaN" in err and "epoch 1" in err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_train_raises_training_diverged_in_python(tmp_path):
    cfg = TrainConfig(
        model="linear_mnist",
        dataset="digits",
        epochs=1,
        steps_per_epoch=10,
        batch_size=32,
        train_examples=320,
        output=str(tmp_path / "r"),
        overrides={"learning_rate": 1e38, "optimizer": "sgd"},
        verbose=0,
    )
    with pytest.raises(TrainingDiverged):
        train(cfg)


def test_rerun_with_another_config_is_refused(trained_run):
    cfg = TrainConfig(
        model="cnn_mnist",
        dataset="digits",
        epochs=1,
        output=str(trained_run.output),
        overrides={"learning_rate": 0.5},
        verbose=0,
    )
    with pytest.raises(UsageError, match="different config"):
        train(cfg)


def test_killed_run_resumes_from_last_completed_epoch(tmp_path):
    out = tmp_path / "run"
    args = [
        # cnn_mnist at ~1 s an epoch: slow enough that the kill lands mid-run on any machine.
        sys.executable, "training/train.py", "--model", "cnn_mnist", "--dataset", "digits",
        "--epochs", "6", "--steps-per-epoch", "25", "--batch-size", "32",
        "--train-examples", "800", "--validation-steps", "2", "--output", str(out),
        "--verbose", "2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    meta = out / "backup" / "training_metadata.json"
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            if meta.is_file():
                try:
                    if json.loads(meta.read_text())["epoch"] >= 1:  # an epoch is done
                        break
                except (json.JSONDecodeError, KeyError):
                    pass  # being written
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed:\n{proc.stdout.read().decode()}")
            time.sleep(0.02)
        else:
            pytest.fail("no backup appeared")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "metrics.json").exists(), "the first run should not have finished"
    killed_after = json.loads(meta.read_text())["epoch"]

    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming after epoch {killed_after}/6" in second.stdout
    # Only the remaining epochs ran in the second process.
    assert f"Epoch {killed_after + 1}/6" in second.stdout
    assert f"Epoch {killed_after}/6" not in second.stdout
    history = json.loads((out / "history.json").read_text())["history"]
    assert len(history["loss"]) == 6  # the epochs of both processes
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == 6
    for epoch in range(1, 7):
        assert (out / "checkpoints" / f"epoch-{epoch:03d}.weights.h5").is_file()
    # The optimizer state came back too: its step counter counts the steps of both processes.
    import h5py

    with h5py.File(out / "backup" / "latest.weights.h5", "r") as f:
        assert int(f["optimizer/vars/0"][()]) == 6 * 25


@pytest.mark.slow  # tests/test_readme.py holds the same claim (>= 0.85 after 50 steps)
def test_cnn_learns_digits(tmp_path):
    """Learning that actually happens: a few hundred steps take cnn_mnist far above chance."""
    result = train(
        TrainConfig(
            model="cnn_mnist",
            dataset="digits",
            epochs=2,
            batch_size=64,
            train_examples=6400,
            validation_steps=16,
            output=str(tmp_path / "r"),
            verbose=0,
        )
    )
    assert result.metrics["val_accuracy"] >= 0.85, result.metrics
    assert result.history["loss"][1] < result.history["loss"][0]


def test_model_fit_works_for_a_user_in_one_process():
    """Zoo models stay plain Keras models: compile() with defaults, then fit()."""
    import zoo.data

    model = zoo.load("cnn_mnist")
    model.compile()
    ds = zoo.data.load("digits", "train", batch_size=64, num_examples=1280)
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)  # ds is shuffled
    assert history.history["loss"][1] < history.history["loss"][0]
    assert set(history.history) == {"loss", "accuracy"}


def test_init_from_pairs_auto_named_layers_built_in_the_same_process(tmp_path):
    """Keras numbers auto-named layers per process, so a run's source model, loaded after the
    model being trained was built, names every layer differently: weights still pair up."""
    from zoo.training import _initialize_from, _read_init_from

    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    for name, target_config in (("cnn_mnist", {}), ("firevnet_mnist_small", {"loss": "ice"})):
        source = zoo.build(name)
        source(x, training=True)
        for i, w in enumerate(source.weights):  # distinct values: a wrong pairing cannot pass
            w.assign(np.random.default_rng(i).normal(size=w.shape).astype(w.dtype))
        path = tmp_path / f"{name}.weights.h5"
        source.save_weights(path)
        model = zoo.build(name, **target_config)
        model(x)
        record = _initialize_from(model, _read_init_from(str(path), name))
        assert record["copied"] == len(source.weights)
        # iCE adds the nuisance classifier and the prior; everything else is the CE network's.
        fresh = set(record["reinitialized"])
        assert len(fresh) == len(model.weights) - len(source.weights)
        own = f"{model.name}/"
        copied = [w for w in model.weights if w.path.removeprefix(own) not in fresh]
        for w, ref in zip(copied, source.weights, strict=True):
            np.testing.assert_array_equal(w.numpy(), ref.numpy(), err_msg=f"{w.path} <- {ref.path}")


def test_validation_figures_are_exact_over_a_ragged_last_batch():
    """Models that track their own figures weight each batch by its size: over 100 examples in
    batches of 64 and 36, the reported accuracy and loss are the exact means over the 100."""
    import tensorflow as tf

    model = zoo.load("firevnet_spheres")
    model.compile()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 100)).astype(np.float32)
    x *= rng.choice([1.0, 10.0], size=(100, 1)).astype(np.float32) / np.linalg.norm(
        x, axis=1, keepdims=True
    )
    y = (np.linalg.norm(x, axis=1) > 5.5).astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    got = model.evaluate(ds, return_dict=True, verbose=0)
    logits = model.predict(x, verbose=0)
    hits = logits.argmax(-1) == y
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits).numpy()
    assert got["accuracy"] == pytest.approx(hits.mean(), abs=1e-6)
    assert got["loss"] == pytest.approx(ce.mean(), rel=1e-5)
    per_batch = (hits[:64].mean() + hits[64:].mean()) / 2
    assert abs(per_batch - hits.mean()) > 1e-3  # the mean of batch means would be told apart
