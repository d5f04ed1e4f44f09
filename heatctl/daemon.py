"""``heatctl run``: the service under systemd — started, looped until SIGTERM/SIGINT, always shut down."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

from heatctl.config import Config
from heatctl.errors import ConfigError, HeatctlError
from heatctl.publish.mqtt_state import NodeSnapshot
from heatctl.service import Service

_LOGGER = logging.getLogger(__name__)


def run_service(cfg: Config, *, on_ready: Callable[[Service], None] | None = None) -> int:
    """Start, loop until SIGTERM/SIGINT, and always shut down cleanly; 1 when a part cannot start."""
    from heatctl.systemd import Notifier

    notifier = Notifier()
    service = Service(cfg, on_tick=lambda snap: notifier.watchdog(status_line(snap)))

    def stop(signum: int, frame: FrameType | None) -> None:
        _LOGGER.info("received %s, stopping", signal.Signals(signum).name)
        service.stop_event.set()
        service.inbox.wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for gpu in cfg.gpus:
        if gpu.backend == "sim":
            _LOGGER.warning("gpu %s is simulated (backend: sim): heatctl heats nothing on this machine", gpu.id)
    try:
        service.start()
        _LOGGER.info(
            "heatctl %s running: %d zone(s), %d gpu(s), state in %s",
            cfg.node_id,
            len(cfg.zones),
            len(cfg.gpus),
            service.state_dir,
        )
        notifier.ready(f"{len(cfg.zones)} zone(s), {len(cfg.gpus)} gpu(s)")
        if on_ready is not None:
            on_ready(service)
        service.run()
    except ConfigError:
        raise
    except HeatctlError as exc:
        _LOGGER.error("%s", exc)
        return 1
    finally:
        notifier.stopping()
        service.shutdown()
        _LOGGER.info("stopped: power limits restored, workloads left in their exit state")
    return 0


def status_line(snap: NodeSnapshot) -> str:
    """One line for systemctl status."""
    heat = f"{snap.heat_w:.0f} W"
    return f"{snap.mode}, heat {heat}" + (f", FAIL-SAFE: {snap.failsafe}" if snap.failsafe else "")
