"""Scaled-down reproductions of the papers' claims, runnable by name.

``python -m zoo.repro --list`` names them; ``python -m zoo.repro NAME [--quick] [--data-dir DIR]
[--output DIR]`` runs one. Each experiment trains and evaluates at a scale a 2-core CPU manages
and returns ``{"measured": {...}, "paper": {...}, "config": {...}}``: what it measured, the
paper's figures for the same claim, and the settings. The runner prints that object as the last
line of its output and writes it, with any plots, to ``--output``.

``--quick`` finishes in about 2 minutes on 2 cores; a full run may take up to about 20.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Experiment", "register_experiment", "list_experiments", "get_experiment", "timed_train",
           "experiment_options"]  # fmt: skip


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction.

    ``fn(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict`` returns the
    ``measured`` / ``paper`` / ``config`` object.
    """

    name: str
    fn: Callable[..., dict[str, Any]]
    description: str
    paper: str | None
    claim: str


_EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(name: str, *, description: str, claim: str, paper: str | None = None):
    def decorator(fn):
        _EXPERIMENTS[name] = Experiment(name, fn, description, paper, claim)
        return fn

    return decorator


def _ensure_registered() -> None:
    from zoo.repro import experiments  # noqa: F401  (registration side effects)


def list_experiments() -> list[Experiment]:
    _ensure_registered()
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]


def get_experiment(name: str) -> Experiment:
    _ensure_registered()
    if name not in _EXPERIMENTS:
        import difflib

        close = difflib.get_close_matches(name, list(_EXPERIMENTS), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown experiment {name!r}.{hint} See python -m zoo.repro --list.")
    return _EXPERIMENTS[name]


def run(name: str, *, quick: bool = False, data_dir: str | None = None,
        output: str | Path | None = None, seed: int = 0, **options: Any) -> dict[str, Any]:  # fmt: skip
    """Run experiment ``name`` and write ``result.json`` to ``output``; returns the result.

    ``options`` (e.g. ``dataset``, ``models``) go to experiments that take them; None is
    left out."""
    import json

    experiment = get_experiment(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(experiment_options(name)))
    if unknown:
        from zoo.training import UsageError

        raise UsageError(f"experiment {name!r} takes no option(s) {', '.join(unknown)}")
    output = Path(output) if output else Path("repro_runs") / name
    output.mkdir(parents=True, exist_ok=True)
    result = experiment.fn(quick=quick, data_dir=data_dir, output=output, seed=seed, **options)
    result = {"experiment": name, "claim": experiment.claim, **result}
    (output / "result.json").write_text(json.dumps(result, indent=2))
    return result


def experiment_options(name: str) -> list[str]:
    """The extra keyword options experiment ``name`` takes (beyond quick, data_dir, output,
    seed), such as ``dataset`` and ``models``."""
    import inspect

    params = inspect.signature(get_experiment(name).fn).parameters
    return [p for p in params if p not in ("quick", "data_dir", "output", "seed")]


def timed_train(**config: Any):
    """Train with the zoo's trainer, quietly: ``TrainConfig(**config, verbose=0)``.

    Returns ``(TrainResult, seconds)``; experiments report how long each training took.
    """
    import time

    from zoo.training import TrainConfig, train

    start = time.perf_counter()
    result = train(TrainConfig(**{"verbose": 0, **config}))
    return result, round(time.perf_counter() - start, 1)
