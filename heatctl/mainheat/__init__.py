"""The room's own heating as heatctl's second stage: the cascade, the devices, the user's setpoint."""
