"""``clipmath shards write|inspect``: placeholder until the datasets work lands (issue 4)."""

from __future__ import annotations

import argparse


def add_shards_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``shards`` subcommand (filled in by the datasets work)."""
