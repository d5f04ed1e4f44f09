"""Prediction and planning: the room model, forecasts, the heat plan."""
