"""The README's quick start, run as written: its first Python block, the training command of
"Install and run", and the Python block that loads that run back."""

from __future__ import annotations

import json
import re
import shlex

from conftest import ROOT, run_cli

README = (ROOT / "README.md").read_text()


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start:end]


def test_readme_quick_start_runs_as_written(tmp_path):
    intro = README[: README.index("\n## ")]
    install = _section("## Install and run (offline)")
    (quick,) = _blocks(intro, "python")
    (load_run,) = _blocks(install, "python")
    (shell,) = _blocks(install, "bash")
    (train_line,) = [line for line in shell.splitlines() if line.startswith("python ")]

    # The training command, run from an empty directory (so its runs/ and exports/ land there).
    argv = shlex.split(train_line)[1:]
    argv[0] = str(ROOT / argv[0])
    proc = run_cli(argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "zoo-train: TensorFlow" in proc.stderr and "oneDNN" in proc.stderr  # the mode, logged
    run, export = tmp_path / "runs" / "cnn_mnist", tmp_path / "exports" / "cnn_mnist" / "1"
    assert (export / "saved_model.pb").is_file() and (export / "assets.extra/model.json").is_file()
    for name in ("config.json", "weights.weights.h5", "backup/training_metadata.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "epoch-001.weights.h5").is_file()
    assert list((run / "logs" / "train").glob("events.out.tfevents.*"))
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "cnn_mnist" and config["train_examples"] == 6400
    metrics = json.loads((run / "metrics.json").read_text())
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # the summary line is JSON
    assert summary["export"].endswith("cnn_mnist/1")
    # It learned: 0.906 over the 10,000 test digits after these 50 steps (chance is 0.1).
    assert summary["val_accuracy"] == metrics["val_accuracy"] >= 0.85

    # The two Python blocks, one after the other in a fresh interpreter in that directory, each
    # followed by a check that its model is what the block says.
    quick_check = (
        "acc = model.evaluate(zoo.data.load('digits', 'test', batch_size=500, "
        "num_examples=2000), return_dict=True, verbose=0)['accuracy']\n"
        "assert acc > 0.5, acc\n"
    )
    load_check = (
        "import numpy as np\n"
        "x = np.random.default_rng(0).random((4, 28, 28, 1), np.float32)\n"
        "ref = zoo.load('cnn_mnist')\n"
        "ref.load_weights('runs/cnn_mnist/weights.weights.h5')\n"
        "np.testing.assert_allclose(model(x), ref(x), atol=1e-6)\n"
    )
    script = tmp_path / "blocks.py"
    script.write_text(quick + quick_check + load_run + load_check + "print('blocks ok')\n")
    done = run_cli([str(script)], cwd=tmp_path)
    assert done.returncode == 0 and "blocks ok" in done.stdout, done.stderr[-3000:]
