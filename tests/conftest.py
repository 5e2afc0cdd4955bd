"""Shared test setup: offline hubs, a non-interactive plotting backend, seeded generators."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
