"""The node's Batch API: its store and queue (opened before the workloads that take from it), its
server, and what the control loop asks of them (work due as heat, the state's batch block)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from heatctl.batch.api import BatchApi, BatchApiServer
from heatctl.batch.queue import BatchQueue
from heatctl.batch.store import BatchStore
from heatctl.config import Config, OpenAIWorkloadConfig

if TYPE_CHECKING:
    from heatctl.house.pool import PoolLink


def batch_runners(cfg: Config) -> list[str]:
    """The GPUs that run batch work (openai workload) in some zone."""
    zoned = {g for z in cfg.zones for g in z.gpus}
    return [g.id for g in cfg.gpus if isinstance(g.workload, OpenAIWorkloadConfig) and g.id in zoned]


class NodeBatches:
    def __init__(self, cfg: Config, state_dir: Path, *, pool: PoolLink | None = None) -> None:
        api_cfg = cfg.batch_api
        assert api_cfg is not None
        runners = [g.workload for g in cfg.gpus if isinstance(g.workload, OpenAIWorkloadConfig)]
        self.store = BatchStore(state_dir / "batch")
        self.queue = BatchQueue(self.store, api_cfg, slots=sum(w.max_concurrency for w in runners))
        if pool is not None:  # in a house: new batches go to its pool
            self.queue.attach_pool(pool)
        self.queue.start()
        upstream = runners[0]
        api = BatchApi(
            api_cfg,
            self.store,
            self.queue,
            upstream=upstream.url,
            upstream_key=upstream.api_key.get_secret_value() if upstream.api_key else None,
        )
        self.server = BatchApiServer(api, api_cfg.host, api_cfg.port, max_connections=api_cfg.max_connections)
        self.server.start()

    def state(self) -> dict[str, Any]:
        """The state's batch block: what waits, what finished since the last tick, where the API listens."""
        api = self.server
        listening = f"http://{api.host}:{api.port}/v1" if api.error is None else None
        return {
            "batches": self.queue.summary().to_json(),
            "batches_finished": self.queue.drain_finished(),
            "batch_api": listening or f"error: {api.error}",
        }

    def stop(self) -> None:
        self.server.stop()
        self.queue.stop()
        self.store.close()
