"""Snapshots are values: what the network thread serialises cannot change under it."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from heatctl.accounting import Counters
from heatctl.config import parse_config
from heatctl.publish.mqtt_state import state_json
from heatctl.service import Service
from tests.conftest import MINIMAL_YAML, FakeClock


class Clock(FakeClock):
    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.is_set()


def test_a_snapshot_does_not_change_when_the_service_ticks_on(tmp_path: object) -> None:
    clock = Clock()
    svc = Service(parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\n"), clock=clock)  # type: ignore[arg-type]
    svc.start()
    try:
        svc.store.put("office", "temperature", 19.0, "t")
        svc.store.put("office", "setpoint", 21.0, "t")
        clock.advance(30)
        snap = svc.tick()
        frozen = state_json(snap)
        for _ in range(10):
            clock.advance(30)
            svc.store.put("office", "temperature", 19.0, "t")
            svc.store.put("office", "setpoint", 21.0, "t")
            svc.tick()
        assert state_json(snap) == frozen
        assert svc.counters.energy_kwh > snap.counters.energy_kwh
        with pytest.raises(dataclasses.FrozenInstanceError):
            snap.counters.energy_kwh = 0.0  # type: ignore[misc]
        with pytest.raises(TypeError):
            snap.gpus["gpu0"] = snap.gpus["gpu0"]  # type: ignore[index]
    finally:
        svc.shutdown()


def test_counters_only_count_up() -> None:
    c = Counters()
    c.add("gpu0", 3.6e6, 1.8e6, True, 10.0)
    c.add("gpu0", -5.0e6, -1.0, True, -4.0)  # a counter reset or a bad reading: never a decrease
    t = c.snapshot()
    assert (t.energy_kwh, t.added_kwh, t.heat_reused_kwh, t.work_done) == (1.0, 0.5, 0.5, 10.0)
    assert dict(t.gpu_energy_kwh) == {"gpu0": 1.0}
    c.add("gpu0", 3.6e6, 7.2e6, False, 0.0)  # added can never exceed the energy itself
    assert c.snapshot().added_kwh == 1.5 and c.snapshot().heat_reused_kwh == 0.5
