"""Workloads: the useful work whose throughput steers the GPU's heat."""
