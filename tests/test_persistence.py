"""What survives a restart: energy counters, integrators, mode and max power."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from heatctl.commands import SetMaxPower, SetZoneMode
from heatctl.config import parse_config
from heatctl.service import Service
from tests.conftest import MINIMAL_YAML, FakeClock


class SteppingClock(FakeClock):
    """The injected service clock: waiting moves virtual time instead of sleeping."""

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        self.advance(max(timeout_s, 0.0))
        return event.is_set()


def service(state_dir: Path, clock: SteppingClock, extra: str = "") -> Service:
    svc = Service(parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {state_dir}\n{extra}"), clock=clock)
    svc.start()
    svc.store.put("office", "temperature", 20.2, "test")
    svc.store.put("office", "setpoint", 21.0, "test")
    return svc


def test_counters_integrator_and_commands_survive_a_restart(tmp_path: Path) -> None:
    clock = SteppingClock()
    first = service(tmp_path, clock)
    for _ in range(20):
        clock.advance(30.0)
        snap = first.tick()
    first.inbox.put(SetMaxPower(200.0))
    first.inbox.put(SetZoneMode("office", "off"))
    clock.advance(30.0)
    first.tick()
    energy = snap.counters.energy_kwh
    integral = first.controller.zones["office"].integral_w  # type: ignore[union-attr]
    assert energy > 0.02 and integral > 0
    first.shutdown()

    second = service(tmp_path, clock)
    try:
        assert second.counters.energy_kwh >= energy  # monotonic across restarts
        assert second.controller.zones["office"].integral_w == integral  # type: ignore[union-attr]
        assert second.max_power_w == 200.0 and second.zone_modes["office"] == "off"
        second.tick()  # the first tick after a start only sets the baseline
        clock.advance(30.0)
        assert second.tick().counters.energy_kwh > energy  # zone off: idle power still counts
    finally:
        second.shutdown()


def test_a_damaged_state_file_with_no_good_copy_starts_off_and_says_so(tmp_path: Path) -> None:
    """heatctl may have been switched off before the crash: it does not know, so it stays off."""
    (tmp_path / "state.json").write_text("{ half a file")
    svc = service(tmp_path, SteppingClock())
    try:
        assert svc.counters.energy_kwh == 0.0 and svc.mode == "off"
        snap = svc.tick()
        assert "state.json is damaged" in snap.extra["state_damaged"]
        assert snap.gpus["gpu0"].level == 0.0
    finally:
        svc.shutdown()


def test_a_damaged_state_file_falls_back_to_its_previous_copy(tmp_path: Path) -> None:
    clock = SteppingClock()
    first = service(tmp_path, clock)
    first.inbox.put(SetZoneMode("office", "off"))
    first.tick()  # saved: zone off
    first.shutdown()  # saved again: the copy before it is kept beside it
    (tmp_path / "state.json").write_bytes(b"\x00" * 64)  # a power cut's torn block
    second = service(tmp_path, clock)
    try:
        assert second.mode == "heat" and second.zone_modes["office"] == "off"
        assert "previous copy" in (second.settings.problem or "")
    finally:
        second.shutdown()


@pytest.mark.parametrize("commanded", [False, True])
def test_max_power_lowered_in_the_config_wins_over_the_last_run(tmp_path: Path, commanded: bool) -> None:
    clock = SteppingClock()
    first = service(tmp_path, clock, "max_power_w: 250\n")
    if commanded:
        first.inbox.put(SetMaxPower(220.0))
        first.tick()
    first.shutdown()
    same = service(tmp_path, clock, "max_power_w: 250\n")
    try:
        assert same.max_power_w == (220.0 if commanded else 250.0)  # a command holds while the config stays
    finally:
        same.shutdown()
    lowered = service(tmp_path, clock, "max_power_w: 150\n")
    try:
        assert lowered.max_power_w == 150.0
    finally:
        lowered.shutdown()
    again = service(tmp_path, clock, "max_power_w: 150\n")
    try:
        assert again.max_power_w == 150.0  # the command yielded for good
    finally:
        again.shutdown()


def test_a_failing_tick_idles_the_gpu_and_gives_up_after_a_few(tmp_path: Path) -> None:
    import pytest

    clock = SteppingClock()
    svc = service(tmp_path, clock)
    try:
        clock.advance(30)
        svc.tick()
        gpu = svc.actuators["gpu0"].gpu
        assert gpu.level == 1.0  # type: ignore[attr-defined]

        def broken(*args: object) -> None:
            raise RuntimeError("a bug")

        svc.controller.step = broken  # type: ignore[assignment,union-attr]
        with pytest.raises(RuntimeError):
            svc.run()
        assert gpu.level == 0.0  # type: ignore[attr-defined]
        assert gpu.read().power_limit_w == svc.actuators["gpu0"].caps().min_limit_w
    finally:
        svc.shutdown()


def test_a_source_going_silent_and_coming_back_is_said_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    clock = SteppingClock()
    svc = service(tmp_path, clock)
    try:
        with caplog.at_level(logging.INFO, "heatctl.service"):
            for _ in range(40):  # 20 min without readings: both go stale (900 s)
                clock.advance(30)
                svc.tick()
            svc.store.put("office", "temperature", 20.0, "test")
            svc.store.put("office", "setpoint", 21.0, "test")
            clock.advance(30)
            svc.tick()
        messages = [r.getMessage() for r in caplog.records]
        assert messages.count("zone office: temperature (z2m/office_trv) silent for 900 s: stale") == 1
        assert messages.count("zone office: temperature (z2m/office_trv) reports again") == 1
        assert messages.count("zone office: fail-safe, no heat: temperature stale") == 1
        assert messages.count("zone office: fail-safe cleared (was: temperature stale)") == 1
    finally:
        svc.shutdown()


def test_check_says_which_state_file_is_damaged_and_what_heatctl_does(tmp_path: Path) -> None:
    from heatctl.check import check_state_dir

    cfg = parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\n")
    assert check_state_dir(cfg).ok and not check_state_dir(cfg).warn
    (tmp_path / "limits.json").write_text('{"GPU-')
    row = check_state_dir(cfg)
    assert row.ok and row.warn and "limits.json is damaged" in row.detail and "safe side" in row.fix


def test_check_reports_the_state_dirs_free_space(tmp_path: Path) -> None:
    from collections import namedtuple

    from heatctl.check import check_state_dir

    usage = namedtuple("usage", "total used free")
    cfg = parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\n")
    row = check_state_dir(cfg, disk_usage=lambda p: usage(10**10, 0, 5 * 10**9))
    assert row.ok and not row.warn and "5,000 MB free" in row.detail
    row = check_state_dir(cfg, disk_usage=lambda p: usage(10**10, 0, 40 * 10**6))
    assert row.ok and row.warn and "only 40 MB free" in row.detail and "below 100 MB" in row.fix
    row = check_state_dir(cfg, disk_usage=lambda p: usage(10**10, 0, 10**5))
    assert not row.ok and "0 MB free" in row.detail and "cannot be written" in row.fix
    from heatctl.config import BatchApiConfig

    with_api = cfg.model_copy(update={"batch_api": BatchApiConfig(token="t" * 16, max_file_mb=200)})  # type: ignore[arg-type]
    row = check_state_dir(with_api, disk_usage=lambda p: usage(10**10, 0, 300 * 10**6))
    assert row.warn and "below 500 MB" in row.fix  # room for an upload and its results


def test_a_signal_while_the_loop_holds_its_wake_event_still_stops_it(tmp_path: Path) -> None:
    """SIGTERM can land while the main thread is inside Event.wait with the event's lock held; the
    handler must not take that lock itself (it would wait for ever: a stop that hangs)."""
    import signal

    from heatctl.daemon import signal_handler

    svc = Service(parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\n"), clock=SteppingClock())
    handler = signal_handler(svc)
    cond = svc.inbox.wake._cond  # type: ignore[attr-defined]
    with cond:  # where Event.wait holds it, in the main thread
        handler(signal.SIGTERM, None)  # returns: it takes no lock the loop may hold
    assert svc.stop_event.wait(5.0) and svc.inbox.wake.wait(5.0)


def test_a_silent_window_contact_is_shown_unknown_and_its_last_state_decides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Contacts report on change and on an hourly check-in: silence is not a fault (no false
    fail-safe), but heatctl stops saying "closed" when it does not know."""
    from heatctl.publish.mqtt_state import state_payload
    from heatctl.status import describe_state

    clock = SteppingClock()
    window = "    window: {topic: z2m/window, json_path: contact, open_when: false}\n    gpus: [gpu0]"
    text = MINIMAL_YAML.replace("    gpus: [gpu0]", window, 1) + f"mqtt: null\nstate_dir: {tmp_path}\n"
    svc = Service(parse_config(text), clock=clock)
    assert svc.cfg.zones[0].window is not None and svc.cfg.zones[0].window.stale_after_s == 7200.0
    svc.start()
    try:
        svc.store.put("office", "window", 0.0, "z2m/window")
        for _ in range(3):
            clock.advance(60.0)
            svc.store.put("office", "temperature", 19.0, "t")
            svc.store.put("office", "setpoint", 21.0, "s")
            snap = svc.tick()
        assert snap.zones["office"].window == "closed" and snap.zones["office"].demand_w > 0
        with caplog.at_level("WARNING", logger="heatctl.service"):
            for _ in range(130):  # 2 h 10 min without a word from the contact
                clock.advance(60.0)
                svc.store.put("office", "temperature", 19.0, "t")
                svc.store.put("office", "setpoint", 21.0, "s")
                snap = svc.tick()
        zone = snap.zones["office"]
        assert zone.window == "unknown" and zone.window_open is False
        assert zone.failsafe is None and zone.demand_w > 0  # no false fail-safe
        assert any("window (z2m/window) silent for 7200 s: shown as unknown" in r.getMessage() for r in caplog.records)
        shown = describe_state(state_payload(snap), node_id="test-node", online=True)
        assert "window unknown (contact silent; last closed)" in shown
        svc.store.put("office", "window", 1.0, "z2m/window")  # it speaks: open
        clock.advance(60.0)
        assert svc.tick().zones["office"].failsafe == "window open"
    finally:
        svc.shutdown()


def test_check_warns_of_a_loop_too_fast_and_fails_one_the_watchdog_would_kill(tmp_path: Path) -> None:
    from heatctl.check import all_checks, check_control

    def rows(interval_s: float) -> list[object]:
        text = MINIMAL_YAML.replace("    gpus: [gpu0]", f"    control: {{interval_s: {interval_s}}}\n    gpus: [gpu0]")
        return check_control(parse_config(text + f"mqtt: null\nstate_dir: {tmp_path}\n"))

    assert rows(30) == []
    (fast,) = rows(0.1)
    assert fast.ok and fast.warn and "10× a second" in fast.detail  # type: ignore[attr-defined]
    (slow,) = rows(600)
    assert not slow.ok and "watchdog" in slow.detail  # type: ignore[attr-defined]
    cfg = parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\n")
    assert [r.part for r in all_checks(cfg)][:1] == ["state_dir"]


def test_status_says_when_the_lowest_limit_is_the_floor_without_a_workload() -> None:
    from heatctl.status import _gpu_line

    floor = {"power_w": 98.0, "power_limit_w": 100.0, "target_w": 0.0, "regime": "idle", "workload": "none"}
    assert "held at its lowest limit, the floor without a workload to pause" in _gpu_line("gpu0", floor, "work")
    working = floor | {"workload": "openai http://127.0.0.1:8080/v1", "power_w": 20.0}
    assert "floor" not in _gpu_line("gpu0", working, "tokens")


def test_status_says_a_power_above_a_just_lowered_limit_was_read_before_it() -> None:
    from heatctl.status import _gpu_line

    lowered = {"power_w": 250.0, "power_limit_w": 180.0, "target_w": 180.0, "regime": "continuous", "workload": "sim"}
    assert "power as read before the new limit took hold" in _gpu_line("gpu0", lowered, "work")
    settled = lowered | {"power_w": 179.0}
    assert "before the new limit" not in _gpu_line("gpu0", settled, "work")
