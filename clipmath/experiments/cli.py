"""The ``clipmath`` command line: list and run experiments, write and inspect shards.

Examples::

    clipmath list
    clipmath run gaussian-2d
    clipmath run gaussian-2d --preset paper --set fit.restarts=5 --seed 3 --out runs/mine
    clipmath run gaussian-process --resume runs/gaussian-process-20261122-101500
    clipmath run gaussian-2d --out runs/mine --overwrite
    torchrun --standalone --nproc_per_node=2 -m clipmath.experiments.cli run gaussian-process
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from clipmath.experiments import registry
from clipmath.experiments.config import ConfigError, dump_yaml, from_dict, load_yaml, preset_names, resolve
from clipmath.experiments.rundir import RunDir, markdown_table, prepare_new


def _cmd_list(args: argparse.Namespace) -> int:
    width = max(len(n) for n in registry.names())
    for name in registry.names():
        exp = registry.get(name)
        print(f"{name.ljust(width)}  {exp.summary}  [presets: {', '.join(preset_names(name))}]")
    return 0


def _shared_run_path(name: str, out: str | None, rank: int, world_size: int) -> str | None:
    """Under torchrun without ``--out``, rank 0 names the run directory and tells the others."""
    if world_size == 1 or out is not None:
        return out
    import torch.distributed as dist

    box = [str(RunDir(name).path) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _resumed_config(exp: registry.Experiment, resume_dir: Path) -> object:
    """The saved config of the run in ``resume_dir``, checked like a new one."""
    config_path = resume_dir / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"--resume {resume_dir}: no config.yaml file there; not a run directory")
    try:
        text = config_path.read_text()
    except OSError as err:
        raise ValueError(f"--resume {resume_dir}: cannot read config.yaml ({err.strerror})") from None
    try:
        return from_dict(exp.config_type, load_yaml(text, str(config_path)))
    except ValueError as err:
        raise ConfigError(f"--resume {resume_dir}: {err}") from None


def _new_run_dir(exp: registry.Experiment, out: str | None, overwrite: bool, rank: int, world_size: int) -> RunDir:
    """The run directory of a new run: ``--out`` checked (and with ``--overwrite`` emptied) first."""
    import torch.distributed as dist

    if out is not None:
        # Every rank checks before any rank writes; rank 0 alone empties, before any rank goes on.
        prepare_new(out, overwrite=overwrite, clear=False)
        if world_size > 1:
            dist.barrier()
        if rank == 0 and overwrite:
            prepare_new(out, overwrite=True)
        if world_size > 1:
            dist.barrier()
    try:
        return RunDir(exp.name, path=_shared_run_path(exp.name, out, rank, world_size))
    except OSError as err:
        raise ValueError(f"--out {err.filename or out}: cannot create the run directory ({err.strerror})") from None


def _cmd_run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from clipmath.multimodal.distributed import init_from_env

    # A no-op unless launched by torchrun; then every rank runs the experiment, rank 0 writes files.
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world_size = init_from_env()
    exp = registry.get(args.name)
    if args.resume:
        if args.set or args.seed is not None or args.preset != "quick" or args.out is not None or args.overwrite:
            raise ValueError(
                "--resume continues a run with its saved config and folder; "
                "drop --preset/--set/--seed/--out/--overwrite"
            )
        resume_dir = Path(args.resume)
        config = _resumed_config(exp, resume_dir)
        run_dir = RunDir(exp.name, path=resume_dir)
        run_dir.resuming = True
    else:
        overrides = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
        # The config is complete and checked (each experiment's dataclass checks its values)
        # before the run directory is touched.
        config = resolve(exp.config_type, exp.name, args.preset, overrides)
        run_dir = _new_run_dir(exp, args.out, args.overwrite, rank, world_size)
        run_dir.resuming = False
        if rank == 0:
            run_dir.write_text("config.yaml", dump_yaml(config))
    try:
        headline = exp.run(config, run_dir)
    finally:
        if world_size > 1 and owns_group:
            dist.destroy_process_group()
    if rank == 0:
        print()
        print(markdown_table(["figure", "measured", "reference", "reference is"], headline.rows))
        print(f"report: {run_dir.file('report.md')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``clipmath`` command."""
    parser = argparse.ArgumentParser(
        prog="clipmath", description="Bimodal contrastive learning: theory, losses and training."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="name every experiment with a one-line summary")
    p_list.set_defaults(func=_cmd_list)

    p_run = sub.add_parser("run", help="run one experiment and write its run directory")
    p_run.add_argument("name", help="experiment name (see `clipmath list`)")
    p_run.add_argument("--preset", default="quick", help="preset: quick (default, minutes on CPU) or paper")
    p_run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.lr=1e-3 (repeatable)",
    )
    p_run.add_argument("--seed", type=int, default=None, help="seed for Python, NumPy, torch and data")
    p_run.add_argument(
        "--out",
        default=None,
        help="run directory (default runs/<experiment>-<time>); must be missing or empty unless --overwrite",
    )
    p_run.add_argument(
        "--overwrite",
        action="store_true",
        help="empty the run directory --out if it holds an earlier run (a folder with config.yaml)",
    )
    p_run.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p_run.set_defaults(func=_cmd_run)

    from clipmath.experiments.shards_cli import add_shards_parser

    add_shards_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clipmath`` console script; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError) as err:
        print(f"clipmath: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that cannot be read or written: named, one line
        print(f"clipmath: error: {_os_error(err)}", file=sys.stderr)
        return 2


def _os_error(err: OSError) -> str:
    """``path: reason`` of an OS error (both paths of a rename), else its text."""
    paths = [p for p in (err.filename, err.filename2) if p is not None]
    if not paths or not err.strerror:
        return str(err)
    return f"{' -> '.join(str(p) for p in paths)}: {err.strerror}"


if __name__ == "__main__":
    sys.exit(main())
