"""tf.distribute, proven: mirrored equals one device, and two real workers end identical.

Both tests start fresh interpreters: logical CPU devices and collective ops can only be set up
before TensorFlow initialises.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

TRAJECTORY = str(ROOT / "tests" / "helpers" / "loss_trajectory.py")
LR = 0.01


def trajectories(cli, out, runs, cpu_devices=2):
    """Per-step training losses of each run, all in one fresh interpreter whose CPU is split into
    ``cpu_devices`` logical devices (tests/helpers/loss_trajectory.py)."""
    proc = cli([TRAJECTORY, str(cpu_devices), str(out), json.dumps(runs)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])["runs"]
    return [(np.array(r["losses"]), r["replicas"]) for r in results]


@pytest.fixture(scope="module")
def cnn_runs(tmp_path_factory):
    """cnn_mnist with plain SGD, same global batch (64), seed and data order: one device and
    mirrored over two, with and without synchronised BatchNorm, and one device at twice the
    learning rate (the negative control)."""
    from conftest import run_cli

    def runs(sync, lrs=(LR,)):
        # Two epochs of 8 steps: the per-epoch replica-state averaging runs between them.
        bn, steps = {"sync_batchnorm": sync}, {"steps_per_epoch": 8}
        return [
            {"strategy": "one_device", "overrides": bn, "learning_rate": lr, **steps} for lr in lrs
        ] + [{"strategy": "mirrored", "overrides": bn, **steps}]

    # One mirrored run per process: a second MirroredStrategy in the same process reuses the
    # first one's collective instance keys.
    synced = trajectories(run_cli, tmp_path_factory.mktemp("synced"), runs(True, (LR, 2 * LR)))
    return dict(zip(["one", "doubled", "two"], synced, strict=True))


@pytest.fixture(scope="module")
def unsynced_runs(tmp_path_factory):
    """The same without synchronised BatchNorm (a second process; the slow test only)."""
    from conftest import run_cli

    bn = {"sync_batchnorm": False}
    plan = [{"strategy": "one_device", "overrides": bn, "learning_rate": LR},
            {"strategy": "mirrored", "overrides": bn}]  # fmt: skip
    unsynced = trajectories(run_cli, tmp_path_factory.mktemp("unsynced"), plan)
    return dict(zip(["one_unsynced", "two_unsynced"], unsynced, strict=True))


def test_mirrored_over_two_devices_follows_one_device_loss_trajectory(cnn_runs):
    """Plain SGD, so that gradient scale matters.

    With SGD, a replica that forgot to divide its loss by the number of replicas would apply
    twice the gradient, i.e. train like one device at twice the learning rate. The negative
    control below shows that such an error moves the trajectory by orders of magnitude more than
    the tolerance.

    Tolerance: 1e-4 relative. With synchronised BatchNorm the two runs compute the same function;
    they differ only in the order of float32 sums (all-reduce vs one reduction), measured at
    ~1e-6 relative over 24 steps (the test takes 16).
    """
    (one, n1), (two, n2), (doubled, _) = cnn_runs["one"], cnn_runs["two"], cnn_runs["doubled"]
    assert (n1, n2) == (1, 2)
    assert len(one) == len(two) == 16
    np.testing.assert_allclose(two, one, rtol=1e-4)
    # Negative control: the error a wrong loss scaling would make is far outside the tolerance.
    assert np.max(np.abs(doubled - one) / one) > 100 * 1e-4
    # And the loss actually went down: this is training, not a constant.
    assert one[-1] < one[0]


@pytest.mark.slow
def test_mirrored_without_sync_batchnorm_stays_close(cnn_runs, unsynced_runs):
    """Without synchronised BN each replica normalises with its own half-batch statistics; the
    trajectory then differs from one device, but only by the BN noise (measured < 3 %). The
    tolerance can tell: a wrong loss scaling (twice the learning rate) moves it further."""
    (one, _), (two, n2) = unsynced_runs["one_unsynced"], unsynced_runs["two_unsynced"]
    doubled = cnn_runs["doubled"][0]
    assert n2 == 2
    deviation = np.max(np.abs(two - one) / one)
    assert 0 < deviation < 0.05  # not the same function, but close
    assert np.max(np.abs(doubled - one) / one) > 0.05


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_worker_multi_worker_run_ends_identical_and_only_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out, exports = tmp_path / "out", tmp_path / "exports"
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]
    procs = []
    for index in range(2):
        scratch[index].mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "TMPDIR": str(scratch[index]),  # where a non-chief keeps its scratch saves
        }
        args = [
            sys.executable, "training/train.py", "--model", "cnn_mnist", "--dataset", "digits",
            "--strategy", "multi_worker", "--epochs", "2", "--steps-per-epoch", "6",
            "--batch-size", "32", "--train-examples", "1024", "--validation-steps", "3",
            "--output", str(out), "--export-dir", str(exports), "--verbose", "0",
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr[-3000:]
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    chief, worker = results
    assert chief["chief"] is True and worker["chief"] is False
    # Identical weights on both workers, BatchNorm moving statistics included.
    assert chief["weights_fingerprint"] == worker["weights_fingerprint"]
    # Metrics are global (reduced across workers), so both report the same figures.
    assert chief["accuracy"] == pytest.approx(worker["accuracy"])
    assert chief["val_loss"] == pytest.approx(worker["val_loss"])
    # Only the chief wrote: one run directory, one export, and the worker left nothing behind.
    assert (out / "metrics.json").is_file() and (out / "weights.weights.h5").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch-001.weights.h5",
        "epoch-002.weights.h5",
    ]
    assert [p.name for p in (exports / "cnn_mnist").iterdir()] == ["1"]
    assert "export" not in worker
    assert list(scratch[1].iterdir()) == []
