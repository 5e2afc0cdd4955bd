"""clipmath.datasets."""
