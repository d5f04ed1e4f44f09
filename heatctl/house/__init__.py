"""A house of heaters: one power budget shared on NATS JetStream."""
