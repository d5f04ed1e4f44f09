"""An OpenAI-compatible Batch API: work that waits for heat, and keeps its deadlines."""
