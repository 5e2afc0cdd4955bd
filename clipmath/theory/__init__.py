"""clipmath.theory."""
