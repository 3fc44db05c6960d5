"""The reproductions scaffold: listing, the JSON contract, and cnn_digits (slow)."""

from __future__ import annotations

import json

import pytest

from zoo import repro
from zoo.repro.__main__ import main


def test_list_names_every_experiment_in_order(cli):
    proc = cli(["-m", "zoo.repro", "--list"])
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.strip().splitlines()]
    assert names == [
        "abs_robustness", "cnn_digits", "feature_alignment", "firevnet_ice", "generalization",
        "inn_ae_bottleneck", "noise_training", "racecar_mi",
        "racecar_peak",
        "racecar_two_image", "slowvae_sprites", "slowvae_toy", "spheres",
    ]  # fmt: skip


def test_unknown_experiment_exits_2_with_close_match(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cnn_digit"])
    assert exc.value.code == 2
    assert "cnn_digits" in capsys.readouterr().err


def test_runner_prints_and_writes_the_result_object(monkeypatch, tmp_path, capsys):
    calls = {}

    def fake(quick, data_dir, output, seed):
        calls.update(quick=quick, data_dir=data_dir, seed=seed)
        return {"measured": {"x": 1.0}, "paper": {"x": 0.9}, "config": {"quick": quick}}

    monkeypatch.setitem(
        repro._EXPERIMENTS,
        "fake",
        repro.Experiment("fake", fake, "a stand-in", None, "x is about 1"),
    )
    assert main(["fake", "--quick", "--output", str(tmp_path), "--seed", "3"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["measured"] == {"x": 1.0} and last["paper"] == {"x": 0.9}
    assert last["claim"] == "x is about 1"
    assert json.loads((tmp_path / "result.json").read_text()) == last
    assert calls == {"quick": True, "data_dir": None, "seed": 3}


@pytest.mark.slow
def test_cnn_digits_quick_reproduces_the_gap(tmp_path):
    result = repro.run("cnn_digits", quick=True, output=tmp_path)
    measured = result["measured"]
    assert measured["cnn_mnist_test_accuracy"] >= 0.95
    assert measured["gap"] >= 0.05
    assert result["paper"]["cnn_mnist_test_accuracy"] == 0.991
