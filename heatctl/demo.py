"""``heatctl demo``: the real service against an embedded broker, a simulated room and GPU."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from heatctl.clock import ScaledClock
from heatctl.config import Config, GpuConfig, MqttConfig, SourceConfig, ZoneConfig
from heatctl.errors import HeatctlError
from heatctl.gpu.sim import SimGpu
from heatctl.service import Service
from heatctl.sim.scenario import Room2R2CConfig

_LOGGER = logging.getLogger(__name__)
THERMOSTAT_TOPIC = "demo/living_room_trv"
WINDOW_TOPIC = "demo/living_room_window"
START_H = 6.25  # the demo day starts at 06:15, just before the morning setpoint


class EmbeddedBroker:
    """amqtt on 127.0.0.1 in a thread of its own (its own asyncio loop)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="broker", daemon=True)
        self._broker: object | None = None

    def start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def start() -> object:
            broker = Broker(config)
            await broker.start()
            return broker

        self._thread.start()
        self._broker = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        if self._broker is not None:
            shutdown = self._broker.shutdown()  # type: ignore[attr-defined]
            try:
                asyncio.run_coroutine_threadsafe(shutdown, self._loop).result(timeout=5)
            except Exception:  # shutting down a demo broker: nothing to save
                _LOGGER.debug("broker shutdown", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(port: int, state_dir: Path) -> Config:
    return Config(
        node_id="demo",
        state_dir=str(state_dir),
        mqtt=MqttConfig(host="127.0.0.1", port=port),
        zones=[
            ZoneConfig(
                name="living_room",
                temperature=SourceConfig(topic=THERMOSTAT_TOPIC, json_path="local_temperature"),
                setpoint=SourceConfig(topic=THERMOSTAT_TOPIC, json_path="occupied_heating_setpoint"),
                window=SourceConfig(topic=WINDOW_TOPIC, json_path="contact", open_when=False),
                gpus=["gpu0"],
            )
        ],
        gpus=[GpuConfig(id="gpu0", backend="sim")],
    )


class DemoRoom:
    """The living room: a 2R2C model heated by the simulated GPU, reporting like a zigbee2mqtt TRV."""

    def __init__(self, gpu: SimGpu, clock: ScaledClock, port: int) -> None:
        room_cfg = Room2R2CConfig(initial_c=18.0)
        self.room = room_cfg.build()
        self._gpu = gpu
        self._clock = clock
        self._t0_s = clock()
        self._stop = threading.Event()
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="demo-room")
        self._client.connect(host="127.0.0.1", port=port)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="demo-room", daemon=True)

    def sim_hours(self) -> float:
        return START_H + (self._clock() - self._t0_s) / 3600.0

    @staticmethod
    def setpoint_c(hour: float) -> float:
        return 21.0 if 6.5 <= hour % 24 < 22.5 else 17.0

    @staticmethod
    def outdoor_c(hour: float) -> float:
        return 6.0 + 4.0 * math.cos(2 * math.pi * (hour - 15.0) / 24.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._client.loop_stop()
        self._client.disconnect()

    def _run(self) -> None:
        last_s = self._clock()
        last_report_s = -math.inf
        while not self._stop.is_set():
            now_s = self._clock()
            hour = self.sim_hours()
            heat_w = self._gpu.read().power_w or 0.0
            self.room.step(max(now_s - last_s, 1e-3), heat_w, self.outdoor_c(hour))
            last_s = now_s
            if now_s - last_report_s >= 60.0:  # the TRV reports every simulated minute
                payload = {
                    "local_temperature": round(self.room.air_c, 1),
                    "occupied_heating_setpoint": self.setpoint_c(hour),
                    "system_mode": "heat",
                    "battery": 87,
                    "linkquality": 120,
                }
                self._client.publish(THERMOSTAT_TOPIC, json.dumps(payload))
                self._client.publish(WINDOW_TOPIC, json.dumps({"contact": True}))
                last_report_s = now_s
            self._clock.wait(self._stop, 10.0)


def status_line(service: Service, room: DemoRoom) -> str:
    snap = service.snapshot
    hour = room.sim_hours()
    clock = f"day {int(hour // 24)} {int(hour % 24):02d}:{int(hour * 60 % 60):02d}"
    if snap is None:
        return f"{clock}  starting…"
    zone = snap.zones["living_room"]
    gpu = snap.gpus["gpu0"]
    temp = f"{zone.temperature_c:.1f}" if zone.temperature_c is not None else "--"
    setp = f"{zone.setpoint_c:.1f}" if zone.setpoint_c is not None else "--"
    work = f"{gpu.work_rate:.0f}" if gpu.work_rate is not None else "--"
    limit = f"{gpu.power_limit_w:.0f}" if gpu.power_limit_w is not None else "--"
    return (
        f"{clock}  room {temp} °C → {setp}  demand {zone.demand_w:4.0f} W  "
        f"GPU {gpu.power_w or 0:4.0f} W (limit {limit})  work {work}/s  "
        f"{snap.counters.energy_kwh:.2f} kWh  {snap.mode}" + (f"  FAIL-SAFE: {snap.failsafe}" if snap.failsafe else "")
    )


def run_demo(*, speed: float = 60.0, port: int = 1883, duration_s: float | None = None) -> int:
    """Run until Ctrl-C (or ``duration_s`` real seconds)."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not port_free(port):
        new_port = free_port()
        print(f"port {port} is taken (a broker already running?); using {new_port}", file=sys.stderr)
        port = new_port
    broker = EmbeddedBroker(port)
    try:
        broker.start()
    except Exception as exc:
        raise HeatctlError(f"cannot start the embedded MQTT broker on port {port}: {exc}") from exc
    _LOGGER.info("embedded MQTT broker listening on 127.0.0.1:%d", port)
    clock = ScaledClock(speed)
    with tempfile.TemporaryDirectory(prefix="heatctl-demo-") as state_dir:
        cfg = demo_config(port, Path(state_dir))
        gpu = SimGpu("gpu0", cfg.gpus[0].sim, time_fn=clock)
        service = Service(cfg, clock=clock, gpus={"gpu0": gpu})
        room = DemoRoom(gpu, clock, port)
        print(
            f"heatctl demo: a simulated living room heated by a simulated 300 W GPU, {speed:g}× real time.\n"
            f"Watch it:   mosquitto_sub -h localhost -p {port} -t 'heatctl/#' -v\n"
            f"Steer it:   mosquitto_pub -h localhost -p {port} -t heatctl/demo/mode/set -m off\n"
            f"            mosquitto_pub -h localhost -p {port} "
            "-t heatctl/demo/living_room/setpoint/set -m 23\n"
            "Ctrl-C stops it.",
            file=sys.stderr,
        )
        worker = threading.Thread(target=service.run, name="control", daemon=True)
        try:
            service.start()
            room.start()
            worker.start()
            _watch(service, room, duration_s)
        except KeyboardInterrupt:
            pass
        finally:
            service.stop_event.set()
            service.inbox.wake.set()
            worker.join(timeout=5)
            room.stop()
            service.shutdown()
            broker.stop()
    print("\nstopped; GPU limit restored, workload stopped.", file=sys.stderr)
    return 0


def _watch(service: Service, room: DemoRoom, duration_s: float | None) -> None:
    tty = sys.stdout.isatty()
    started = time.monotonic()
    last_line = 0.0
    while duration_s is None or time.monotonic() - started < duration_s:
        line = status_line(service, room)
        if tty:
            print("\r" + line + "\x1b[K", end="", flush=True)  # ESC[K clears what a longer line left
        elif time.monotonic() - last_line >= 5.0:
            print(line, flush=True)
            if service.snapshot is not None:  # after "starting…", the first real line comes at once
                last_line = time.monotonic()
        time.sleep(1.0)
