"""``heatctl run``: the service under systemd — started, looped until SIGTERM/SIGINT, always shut down."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from heatctl.config import Config
from heatctl.errors import ConfigError, HeatctlError, InstanceConflict
from heatctl.publish.mqtt_state import NodeSnapshot
from heatctl.service import Service

_LOGGER = logging.getLogger(__name__)


def run_service(cfg: Config, *, on_ready: Callable[[Service], None] | None = None) -> int:
    """Start, loop until SIGTERM/SIGINT, and always shut down cleanly; 1 when a part cannot start."""
    from heatctl.systemd import Notifier

    notifier = Notifier()
    service = Service(cfg, on_tick=lambda snap: notifier.watchdog(status_line(snap)))

    stop = signal_handler(service)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for gpu in cfg.gpus:
        if gpu.backend == "sim":
            _LOGGER.warning("gpu %s is simulated (backend: sim): heatctl heats nothing on this machine", gpu.id)
    refused = False
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
    except InstanceConflict:
        refused = True
        raise  # exit 2, one line: the other instance is untouched
    except ConfigError:
        raise
    except HeatctlError as exc:
        _LOGGER.error("%s", exc)
        return 1
    finally:
        notifier.stopping()
        service.shutdown()
        if not refused:
            _LOGGER.info("stopped: power limits restored, workloads left in their exit state")
    return 0


def signal_handler(service: Service) -> Callable[[int, FrameType | None], None]:
    """SIGTERM/SIGINT: the service stops at its next look."""

    def request_stop(name: str) -> None:
        _LOGGER.info("received %s, stopping", name)
        service.stop_event.set()
        service.inbox.wake.set()

    def stop(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs in the main thread between two of its bytecodes, perhaps inside the
        # control loop's Event.wait holding that event's lock: setting the event here could wait on
        # that lock for ever (a stop that hangs until systemd kills it). A thread of its own sets it.
        name = signal.Signals(signum).name
        threading.Thread(target=request_stop, args=(name,), name="stop", daemon=True).start()

    return stop


def status_line(snap: NodeSnapshot) -> str:
    """One line for systemctl status."""
    heat = f"{snap.heat_w:.0f} W"
    return f"{snap.mode}, heat {heat}" + (f", FAIL-SAFE: {snap.failsafe}" if snap.failsafe else "")
