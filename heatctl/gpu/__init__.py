"""GPU backends: steer and read a GPU's power. Backends register by name."""
