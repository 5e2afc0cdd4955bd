"""clipmath.multimodal."""
