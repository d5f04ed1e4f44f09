"""A house of heaters on a real ``nats-server -js``: one budget, shared; safe while NATS is away."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heatctl.config import parse_config
from heatctl.house.budget import PeerState, split
from heatctl.service import Service
from tests.conftest import FakeClock
from tests.services import NatsServer, wait_until

pytestmark = pytest.mark.integration
BUDGET_W = 500.0


def node_config(name: str, state_dir: Path, url: str) -> str:
    return f"""
node_id: {name}
mqtt: null
state_dir: {state_dir}
house: {{nats: "{url}", name: test-house, budget_w: {BUDGET_W}, nodes: 3, publish_every_s: 0.2, stale_after_s: 2}}
zones:
  - name: room
    temperature: {{topic: t}}
    setpoint: {{topic: s}}
    gpus: [gpu0]
gpus: [{{id: gpu0, backend: sim, sim: {{idle_w: 20, min_limit_w: 100, max_limit_w: 300}}}}]
"""


class House:
    def __init__(self, tmp_path: Path, url: str) -> None:
        self.clock = FakeClock()
        self.nodes = {
            name: Service(parse_config(node_config(name, tmp_path / name, url)), clock=self.clock)  # type: ignore[arg-type]
            for name in ("kitchen", "study", "bedroom")
        }
        for svc in self.nodes.values():
            svc.start()

    def tick(self, rooms_c: dict[str, float]) -> dict[str, float]:
        """Every node a tick; each GPU's draw."""
        self.clock.advance(10.0)
        drawn = {}
        for name, svc in self.nodes.items():
            svc.store.put("room", "temperature", rooms_c[name], "t")
            svc.store.put("room", "setpoint", 21.0, "s")
            drawn[name] = svc.tick().gpus["gpu0"].power_w or 0.0
        return drawn

    def settle(self, rooms_c: dict[str, float], seconds: float = 1.5) -> dict[str, float]:
        """Ticks for a while of real time, so that the nodes' reports go round the house."""
        end = time.monotonic() + seconds
        drawn = self.tick(rooms_c)
        while time.monotonic() < end:  # the house threads publish and read in real time meanwhile
            drawn = self.tick(rooms_c)
        return drawn

    def wait_seen(self, rooms_c: dict[str, float], timeout_s: float = 30.0) -> None:
        """Tick until every node has heard every other one (JetStream's first answers can be slow on a
        busy machine)."""

        def everyone_heard() -> bool:
            self.tick(rooms_c)
            for svc in self.nodes.values():
                assert svc.house is not None
                nodes = svc.house.state()["house"]["nodes"]
                if len(nodes) != len(self.nodes) or any(n["silent"] for n in nodes.values()):
                    return False
            return True

        wait_until(everyone_heard, timeout_s, "every node hearing the others")

    def wait_drawn(self, rooms_c: dict[str, float], ok: Any, what: str, timeout_s: float = 30.0) -> dict[str, float]:
        """Tick until the draws satisfy ``ok`` (the reports go round the house in real time)."""
        return wait_until(lambda: (d := self.tick(rooms_c)) and ok(d) and d, timeout_s, what)  # type: ignore[no-any-return]

    def stop(self) -> None:
        for svc in self.nodes.values():
            svc.shutdown()


@pytest.fixture
def house(nats_server: NatsServer, tmp_path: Path) -> Iterator[House]:
    h = House(tmp_path, nats_server.url)
    yield h
    h.stop()


COLD = {"kitchen": 17.0, "study": 17.0, "bedroom": 17.0}
ONE_COLD = {"kitchen": 17.0, "study": 22.5, "bedroom": 22.5}


def test_three_cold_rooms_share_the_budget_and_one_cold_room_gets_it(house: House) -> None:
    wait_until(lambda: all(s.house and s.house.connected for s in house.nodes.values()), 10, "the nodes in the house")
    house.wait_seen(COLD)
    drawn = house.settle(COLD, seconds=2.0)
    assert sum(drawn.values()) <= BUDGET_W * 1.05, drawn  # three rooms flat out would draw 900 W
    assert all(w >= 0.8 * BUDGET_W / 3 for w in drawn.values()), drawn  # shared, not first come
    # The one cold room gets its GPU's capacity out of the budget (once the warm rooms' reports are round).
    drawn = house.wait_drawn(ONE_COLD, lambda d: d["kitchen"] >= 290.0, "the cold room's GPU at its capacity")
    assert sum(drawn.values()) <= BUDGET_W * 1.05, drawn
    state = house.nodes["kitchen"].snapshot.extra["house"]  # type: ignore[union-attr]
    assert state["connected"] and state["budget_w"] == BUDGET_W and set(state["nodes"]) == set(house.nodes)


def test_nats_down_every_node_keeps_control_within_the_budget_then_shares_again(
    house: House, nats_server: NatsServer
) -> None:
    wait_until(lambda: all(s.house and s.house.connected for s in house.nodes.values()), 10, "the nodes in the house")
    house.wait_seen(ONE_COLD)
    house.settle(ONE_COLD, seconds=1.0)
    nats_server.stop()
    drawn = house.settle(COLD, seconds=3.5)  # past stale_after_s: the others count at their full capacity
    assert all(s.house and not s.house.connected for s in house.nodes.values())
    assert sum(drawn.values()) <= BUDGET_W * 1.05, drawn  # the fuse holds without the house
    assert all(w > 20.0 for w in drawn.values()), drawn  # and every room still gets heat: control goes on
    nats_server.start()
    wait_until(lambda: all(s.house and s.house.connected for s in house.nodes.values()), 20, "back in the house")
    house.wait_seen(COLD)
    drawn = house.wait_drawn(COLD, lambda d: sum(d.values()) >= 0.9 * BUDGET_W, "the budget shared again")
    assert sum(drawn.values()) <= BUDGET_W * 1.05, drawn


def test_the_split_puts_comfort_first_and_counts_a_silent_peer_at_full_capacity() -> None:
    now = 1000.0
    peers = {
        "a": PeerState(300.0, 0.0, 0.0, 300.0, now),
        "b": PeerState(100.0, 300.0, 0.0, 300.0, now),  # comfort 100, the rest for a deadline
        "c": PeerState(0.0, 0.0, 200.0, 300.0, now),  # only stored heat
    }
    shares = split(500.0, peers, now, 30.0)
    assert shares == {"a": pytest.approx(300.0), "b": pytest.approx(200.0), "c": 0.0}  # comfort, then b's deadline
    shares = split(800.0, peers, now, 30.0)  # comfort (400) met, the deadline next (200 of it), storing last
    assert shares == {"a": pytest.approx(300.0), "b": pytest.approx(300.0), "c": pytest.approx(200.0)}
    silent = dict(peers, c=PeerState(0.0, 0.0, 0.0, 300.0, now - 60.0))  # not heard for a minute
    shares = split(500.0, silent, now, 30.0)
    assert shares["c"] == pytest.approx(500.0 * 300.0 / 700.0)  # flat out, first: the fuse holds
    assert sum(shares.values()) == pytest.approx(500.0)
    assert split(500.0, {"a": None}, now, 30.0) == {"a": pytest.approx(500.0)}
    assert PeerState.from_json(b'{"comfort_w": -1}') is None and PeerState.from_json(b"garbage") is None


def test_check_reaches_the_house_and_says_who_reports(nats_server: NatsServer, house: House, tmp_path: Path) -> None:
    from heatctl.check import check_house

    wait_until(lambda: all(s.house and s.house.connected for s in house.nodes.values()), 10, "the nodes in the house")
    house.wait_seen(COLD)
    row = check_house(parse_config(node_config("kitchen", tmp_path / "k", nats_server.url)))
    assert row.ok and "JetStream ready" in row.detail and "reporting: bedroom, kitchen, study" in row.detail
    down = check_house(parse_config(node_config("kitchen", tmp_path / "k", "nats://127.0.0.1:9")))
    assert not down.ok and "nats-server -js" in down.fix


def test_the_planner_takes_the_houses_share_as_the_nodes_cap(tmp_path: Path) -> None:
    # NATS not there: the share is the budget over the nodes (the safe side), and the planner plans
    # with it as the node's cap, not with the GPU's whole capacity.
    cfg = parse_config(node_config("kitchen", tmp_path / "k", "nats://127.0.0.1:9") + "planner: {objective: energy}\n")
    svc = Service(cfg, clock=FakeClock())  # type: ignore[arg-type]
    svc.start()
    try:
        assert svc._planned_cap_w() == pytest.approx(BUDGET_W / 3)
        assert svc.planner is not None
        cap_w = svc.planner._max_power_fn()  # what its horizon's cap starts from
        assert cap_w == pytest.approx(BUDGET_W / 3)
    finally:
        svc.shutdown()
