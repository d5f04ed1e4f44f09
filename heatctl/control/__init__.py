"""The pure control core: readings and ``now`` in, actions out."""
