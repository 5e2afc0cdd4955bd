"""``clipmath shards write|inspect``: write a named source into webdataset shards, or summarise a shard directory.

Examples::

    clipmath shards write gaussian --out data/gauss2d --n 10000
    clipmath shards write gaussian --set n_u=8 --set n_v=4 --set cov_seed=1 --out data/g84
    clipmath shards write gaussian-process --set sigma=0.1 --n 200000 --max-count 20000 --out data/gp
    clipmath shards inspect data/gp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from clipmath.datasets import build_source, gaussian_samples, read_manifest, sources, write_shards
from clipmath.datasets.shards import check_shards
from clipmath.datasets.sources import source_parameters
from clipmath.experiments.config import parse_override


def _source_params(overrides: list[str]) -> dict:
    params = {}
    for text in overrides:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise ValueError(f"--set {text!r}: source parameters are flat; expected key=value")
        params[keys[0]] = value
    return params


def _cmd_write(args: argparse.Namespace) -> int:
    params = _source_params(args.set)
    source = build_source(args.source, **params)
    samples = tqdm(gaussian_samples(source, args.n, args.seed), total=args.n, desc="write", unit="sample")
    config = {"name": args.source, "params": params, "n": args.n, "seed": args.seed}
    write_shards(samples, args.out, max_count=args.max_count, max_bytes=args.max_bytes, source=config)
    return _cmd_inspect(argparse.Namespace(dir=args.out))


def _cmd_inspect(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.dir)
    problems = check_shards(args.dir)
    counts = [shard.count for shard in manifest.shards]
    size = sum(shard.bytes for shard in manifest.shards)
    print(f"shard directory: {Path(args.dir)} (format version {manifest.format_version})")
    print(
        f"samples: {manifest.total} in {len(counts)} shards "
        f"({min(counts)}-{max(counts)} per shard), {size / 2**20:.2f} MiB"
    )
    print("fields:")
    for name, info in manifest.fields.items():
        shape = "-" if info.shape is None else str(tuple(info.shape))
        print(f"  {name}: .{info.ext}, shape {shape}, {info.dtype}")
    unverified = {p.name for p in problems if p.kind in ("missing", "checksum")}
    print(f"checksums: {len(counts) - len(unverified)}/{len(counts)} ok")
    print(f"disagreements with the manifest: {len(problems) or 'none'}")
    for problem in problems:
        print(f"  {problem}")
    print(f"source: {json.dumps(manifest.source)}")
    return 1 if problems else 0


def add_shards_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``clipmath shards write`` and ``clipmath shards inspect``."""
    p_shards = sub.add_parser("shards", help="write a source into webdataset shards, or inspect a shard directory")
    shards_sub = p_shards.add_subparsers(dest="shards_command", required=True)

    p_write = shards_sub.add_parser(
        "write",
        help="draw samples from a named source and write shards plus manifest.json",
        description="Sources and their --set parameters:\n"
        + "\n".join(f"  {name}: {', '.join(source_parameters(name))}" for name in sources())
        + "\n\ngaussian with no parameters is the 2-D example of Section 5.4; see "
        "clipmath.datasets.sources for the meaning of each parameter.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_write.add_argument("source", choices=sources(), help="source name")
    p_write.add_argument("--out", required=True, help="new directory for the shards")
    p_write.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="source parameter, YAML value, e.g. --set sigma=0.1 or --set cov=[[2,1],[1,2]] (repeatable)",
    )
    p_write.add_argument("--n", type=int, default=10000, help="number of samples (default 10000)")
    p_write.add_argument("--max-count", type=int, default=10000, help="most samples per shard (default 10000)")
    p_write.add_argument("--max-bytes", type=int, default=None, help="most bytes per shard file (default: no limit)")
    p_write.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p_write.set_defaults(func=_cmd_write)

    p_inspect = shards_sub.add_parser(
        "inspect",
        help="print a shard directory's manifest summary and every disagreement with it: shard files it does "
        "not list, listed shards missing, sizes, checksums and sample counts other than it records (exit 1 if any)",
    )
    p_inspect.add_argument("dir", help="shard directory holding manifest.json")
    p_inspect.set_defaults(func=_cmd_inspect)
