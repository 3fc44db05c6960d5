"""``python -m zoo.repro --list`` / ``python -m zoo.repro NAME [--quick] [--data-dir DIR]``."""

from __future__ import annotations

import argparse
import json
import sys

from zoo.cli_utils import announce_runtime, start_cli


def main(argv: list[str] | None = None) -> int:
    start_cli("zoo.repro")
    from zoo import repro
    from zoo.training import UsageError

    p = argparse.ArgumentParser(
        prog="python -m zoo.repro", description=repro.__doc__.split("\n")[0]
    )
    p.add_argument("name", nargs="?", help="experiment to run")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--quick", action="store_true", help="the ~2-minute version")
    p.add_argument("--data-dir", help="where real datasets live (else procedural data is used)")
    p.add_argument("--output", help="where result.json and plots go (default repro_runs/NAME)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", help="for experiments that take one (e.g. generalization)")
    p.add_argument("--models", help="comma-separated models, for experiments that take them")
    args = p.parse_args(argv)
    if args.list:
        for e in repro.list_experiments():
            paper = f"  [{e.paper}]" if e.paper else ""
            print(f"{e.name:<20} {e.description}{paper}")
        return 0
    if not args.name:
        p.error("name an experiment, or pass --list")
    try:
        repro.get_experiment(args.name)
    except KeyError as e:
        p.error(str(e.args[0]))
    options = {"dataset": args.dataset, "models": args.models}
    for key, value in options.items():
        if value is not None and key not in repro.experiment_options(args.name):
            p.error(f"experiment {args.name!r} takes no --{key}")
    announce_runtime("zoo.repro")
    try:
        result = repro.run(
            args.name, quick=args.quick, data_dir=args.data_dir, output=args.output,
            seed=args.seed, **options,
        )  # fmt: skip
    except UsageError as e:  # e.g. a --dataset or --models value the experiment refuses
        p.error(str(e))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
