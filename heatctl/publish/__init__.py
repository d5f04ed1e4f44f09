"""Outputs: MQTT state, Home Assistant discovery, InfluxDB."""
