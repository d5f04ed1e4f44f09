"""Sources: readings in (MQTT topics, Home Assistant entities), validated and timestamped."""
