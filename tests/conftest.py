"""Test settings: Keras on TensorFlow, no network, a private weights cache, a quiet TF."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download: zoo.data refuses to try, and fails fast with its offline message.
os.environ["ZOO_OFFLINE"] = "1"

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _zoo_home(tmp_path, monkeypatch):
    """Each test gets an empty weights cache, so nothing leaks in from ~/.cache/zoo."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))


@pytest.fixture(autouse=True)
def _no_global_seed_leaks():
    """A test that sets TensorFlow's global seed (keras.utils.set_random_seed) must not change
    what later tests see: a seeded shuffle's order depends on whether a global seed is set, so
    results would depend on which tests ran first (or on which pytest-xdist worker)."""
    yield
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(None)


def run_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300, cwd=None):
    """Run a repository script (e.g. ``["training/train.py", ...]``) in a fresh interpreter."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny cnn_mnist run on digits, trained once in-process and shared (read-only)."""
    from zoo.training import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    result = train(
        TrainConfig(
            model="cnn_mnist",
            dataset="digits",
            epochs=2,
            steps_per_epoch=15,
            validation_steps=4,
            batch_size=32,
            train_examples=1024,
            output=str(out / "run"),
            verbose=0,
        )
    )
    return result
