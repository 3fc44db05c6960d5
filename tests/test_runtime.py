"""zoo.runtime and the command-line processes' oneDNN default (README "CPU modes")."""

from __future__ import annotations

import os
import sys

import pytest

from zoo import runtime


@pytest.fixture
def fresh_process(monkeypatch):
    """As a command-line process sees it before importing TensorFlow: no TensorFlow module loaded
    and the mode variable unset. (Only ``sys.modules``' entry is hidden; nothing is re-imported.)"""
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delenv(runtime.ONEDNN_VARIABLE, raising=False)
    return monkeypatch


def test_cli_processes_turn_onednn_on_when_the_user_has_not_chosen(fresh_process):
    assert runtime.prefer_onednn() is True
    assert os.environ[runtime.ONEDNN_VARIABLE] == "1"


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_a_users_own_setting_always_wins(fresh_process, value):
    fresh_process.setenv(runtime.ONEDNN_VARIABLE, value)
    assert runtime.prefer_onednn() is False
    assert os.environ[runtime.ONEDNN_VARIABLE] == value


def test_nothing_changes_once_tensorflow_is_loaded(monkeypatch):
    import tensorflow  # noqa: F401

    monkeypatch.delenv(runtime.ONEDNN_VARIABLE, raising=False)
    assert runtime.prefer_onednn() is False
    assert runtime.ONEDNN_VARIABLE not in os.environ


def test_importing_the_library_never_sets_the_mode(tmp_path):
    """``import zoo`` and its subpackages leave TF_ENABLE_ONEDNN_OPTS alone."""
    import subprocess

    code = (
        "import os, zoo, zoo.layers.grouped, zoo.models\n"
        "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != runtime.ONEDNN_VARIABLE}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "unset"


def test_describe_names_the_cpu_and_the_mode():
    info = runtime.describe()
    assert info["onednn"] in ("on", "off") and info["cpu"] and info["tensorflow"]
    assert info["onednn"] == ("on" if runtime.onednn_enabled() else "off")
