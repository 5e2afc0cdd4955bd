"""clipmath.experiments."""
