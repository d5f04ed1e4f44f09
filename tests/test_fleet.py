"""A fleet: a hub and two houses, three real ``nats-server`` processes from ``deploy/nats``'s configs
(the houses leaf nodes of the hub, each its own JetStream domain). A batch made at the hub runs in
the house whose room wants heat; a house whose leaf link is cut keeps running its own work, and
the fleet's batch loses nothing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from heatctl.config import parse_config
from heatctl.service import Service
from tests.conftest import FakeClock
from tests.services import NatsServer, TcpLink, TinyLLM, deployed_nats_conf, free_port, wait_until
from tests.test_house_pool import TOKEN, House, output_ids, submit

pytestmark = pytest.mark.integration


def node_config(name: str, state_dir: Path, *, nats_url: str, house: str, llm_url: str, port: int, fleet: bool) -> str:
    jobs = state_dir.parent / f"{name}-jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    fleet_cfg = ", fleet: {name: fleet, domain: hub}" if fleet else ""
    return f"""
node_id: {name}
mqtt: null
state_dir: {state_dir}
batch_api: {{listen: "127.0.0.1:{port}", token: {TOKEN}}}
house: {{nats: "{nats_url}", name: {house}, budget_w: 600, nodes: 1, publish_every_s: 0.2, stale_after_s: 3,
         ack_wait_s: 2{fleet_cfg}}}
zones:
  - name: room
    temperature: {{topic: t}}
    setpoint: {{topic: s}}
    control: {{interval_s: 1}}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: sim
    sim: {{idle_w: 20, min_limit_w: 100, max_limit_w: 300}}
    workload: {{type: openai, url: "{llm_url}", model: tinyllm, max_concurrency: 4, request_timeout_s: 30,
               jobs: "{jobs}"}}
"""


class Fleet(House):
    """The hub's node (where fleet batches are made; its room warm) and one node in each house."""

    def __init__(self, tmp_path: Path, llm_url: str) -> None:
        leaf_port = free_port()
        self.hub = NatsServer(
            tmp_path,
            name="hub",
            conf=deployed_nats_conf(
                "hub.conf",  # the address it tells the houses: none they can reach, so a cut link stays cut
                {"0.0.0.0:7422": f"127.0.0.1:{leaf_port}", "hub.example.net:7422": "127.0.0.1:9"},
            ),
        )
        self.hub.start()
        self.links = {h: TcpLink(leaf_port) for h in ("house-a", "house-b")}
        self.houses = {
            h: NatsServer(
                tmp_path,
                name=h,
                conf=deployed_nats_conf(
                    "house-leaf.conf",
                    {
                        "server_name: house-a": f"server_name: {h}",
                        "domain: house-a": f"domain: {h}",
                        "hub.example.net:7422": f"127.0.0.1:{self.links[h].port}",
                    },
                ),
            )
            for h in self.links
        }
        for server in self.houses.values():
            server.start()
        self.clock = FakeClock()
        self.ports = {name: free_port() for name in ("hubnode", "a1", "b1")}
        where = {"hubnode": (self.hub.url, "fleet", False), "a1": (self.houses["house-a"].url, "house-a", True)}
        where["b1"] = (self.houses["house-b"].url, "house-b", True)
        self.nodes = {
            name: Service(
                parse_config(
                    node_config(
                        name,
                        tmp_path / name,
                        nats_url=url,
                        house=house,
                        llm_url=llm_url,
                        port=self.ports[name],
                        fleet=fleet,
                    )
                ),
                clock=self.clock,  # type: ignore[arg-type]
            )
            for name, (url, house, fleet) in where.items()
        }
        for svc in self.nodes.values():
            svc.start()
        wait_until(
            lambda: all(s.house and s.house.pool and s.house.pool._house for s in self.nodes.values()), 30, "the pools"
        )

    def stop(self) -> None:
        super().stop()
        for link in self.links.values():
            link.close()
        for server in (*self.houses.values(), self.hub):
            server.stop()


@pytest.fixture
def fleet(tinyllm: TinyLLM, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path, tinyllm.url)
    yield f
    f.stop()


def test_a_batch_at_the_hub_runs_in_the_house_that_wants_heat(fleet: Fleet) -> None:
    rooms = {"a1": 17.0}  # house A's room cold; house B's and the hub's warm
    batch_id = submit(fleet.ports["hubnode"], 20, prefix="f")
    batch = fleet.until(fleet.ports["hubnode"], batch_id, rooms)
    assert batch.status == "completed" and batch.request_counts.completed == 20
    assert output_ids(fleet.ports["hubnode"], batch) == Counter({f"f{i}": 1 for i in range(20)})
    by_node = batch.model_dump()["heat"]["by_node"]
    assert by_node.get("a1", 0) >= 0.8 * 20, by_node


def test_a_house_cut_off_from_the_hub_runs_its_own_work_and_the_fleets_batch_loses_nothing(fleet: Fleet) -> None:
    cold_a = {"a1": 17.0}
    fleet_batch = submit(fleet.ports["hubnode"], 40, prefix="f")
    fleet.until_completed(fleet.ports["hubnode"], fleet_batch, cold_a, 5, what="house A running the fleet's batch")
    fleet.links["house-a"].cut()  # house A's leaf link to the hub is gone
    cut_at = time.monotonic()
    own = submit(fleet.ports["a1"], 10, prefix="own")  # house A's own batch, in its own pool
    both_cold = {"a1": 17.0, "b1": 17.0}  # house B's room cold now too: it takes the fleet's work meanwhile
    done_own = fleet.until(fleet.ports["a1"], own, both_cold)
    assert done_own.status == "completed" and output_ids(fleet.ports["a1"], done_own) == Counter(
        {f"own{i}": 1 for i in range(10)}
    )
    fleet.until_completed(
        fleet.ports["hubnode"],
        fleet_batch,
        both_cold,
        30,
        what="house B running the fleet's batch while A is cut off",
        timeout_s=120,
    )
    assert time.monotonic() - cut_at > 2.0  # past the ack deadline of what house A held
    fleet.links["house-a"].mend()
    batch = fleet.until(fleet.ports["hubnode"], fleet_batch, both_cold, timeout_s=180)
    assert batch.status == "completed" and batch.request_counts.completed == 40
    assert output_ids(fleet.ports["hubnode"], batch) == Counter({f"f{i}": 1 for i in range(40)})
    by_node = batch.model_dump()["heat"]["by_node"]
    assert sum(by_node.values()) == 40 and by_node.get("a1", 0) >= 5 and by_node.get("b1", 0) > 0, by_node
