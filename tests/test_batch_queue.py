"""The batch store and queue on their own: validation, durability, deadlines, energy (no services)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heatctl.batch.queue import FLAT_OUT, MARGIN_S, SAFETY, BatchQueue, at_risk, parse_requests, work_for_plan
from heatctl.batch.store import BatchStore
from heatctl.config import BatchApiConfig, parse_config
from heatctl.control.core import NodeController, NodeInputs
from heatctl.control.efficiency import GpuCaps
from heatctl.control.safety import Reading, ZoneInputs

CHAT = "/v1/chat/completions"


class Wall:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def line(custom_id: str, url: str = CHAT, **body: Any) -> str:
    payload = {"model": "m", "messages": [{"role": "user", "content": custom_id}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": payload})


def api_cfg(**kw: Any) -> BatchApiConfig:
    return BatchApiConfig(token="a-token-of-enough-length", **kw)  # type: ignore[arg-type]


def new_queue(tmp_path: Path, wall: Wall, slots: int = 2) -> tuple[BatchStore, BatchQueue]:
    store = BatchStore(tmp_path / "batch", wall_fn=wall)
    return store, BatchQueue(store, api_cfg(), slots=slots, mono_fn=wall)


def submit(store: BatchStore, queue: BatchQueue, lines: list[str], window_s: float = 86400) -> str:
    record = store.add_file("in.jsonl", "batch", [("\n".join(lines) + "\n").encode()])
    batch = store.create_batch(record.id, CHAT, "24h", window_s, {"who": "test"})
    queue.maintain()
    return str(batch["id"])


def codes(text: str, **kw: Any) -> list[tuple[str, int | None]]:
    _, errors = parse_requests(text, CHAT, kw.get("max_requests", 100))
    return [(e["code"], e["line"]) for e in errors]


def test_validation_gives_the_openai_error_codes_with_lines() -> None:
    text = "\n".join(
        [
            line("a"),
            "{not json",
            "[1, 2]",
            line("a"),
            line("b", url="/v1/embeddings"),
            line("c", url="/v1/images"),
            json.dumps({"custom_id": "d", "method": "POST", "url": CHAT}),
            json.dumps({"custom_id": "e", "method": "GET", "url": CHAT, "body": {}}),
            line("f", stream=True),
        ]
    )
    assert codes(text) == [
        ("invalid_json_line", 2),
        ("invalid_json_line", 3),
        ("duplicate_custom_id", 4),
        ("url_mismatch", 5),
        ("invalid_url", 6),
        ("missing_required_parameter", 7),
        ("invalid_request", 8),
        ("invalid_request", 9),
    ]
    assert codes("\n\n") == [("empty_file", None)]
    assert codes("\n".join(line(str(i)) for i in range(3)), max_requests=2) == [("too_many_tasks", None)]
    assert codes(line("a") + "\n" + line("b", model="other")) == [("model_mismatch", None)]
    requests, errors = parse_requests(line("a") + "\n\n" + line("b"), CHAT, 10)
    assert errors == [] and [(n, cid) for n, cid, _, _ in requests] == [(1, "a"), (3, "b")]


def test_a_bad_file_fails_its_batch_and_others_go_on(tmp_path: Path) -> None:
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    bad = submit(store, queue, [line("a"), line("a")])
    good = submit(store, queue, [line("x")])
    failed = store.get_batch(bad)
    assert failed is not None and failed["status"] == "failed" and failed["failed_at"] == int(wall.t)
    assert failed["errors"]["data"][0]["code"] == "duplicate_custom_id" and failed["errors"]["data"][0]["line"] == 2
    running = store.get_batch(good)
    assert running is not None and running["status"] == "in_progress" and running["request_counts"]["total"] == 1
    assert queue.take("gpu0") is not None


def test_earliest_deadline_first_and_a_cut_off_request_goes_back(tmp_path: Path) -> None:
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    late = submit(store, queue, [line("late")], window_s=86400)
    soon = submit(store, queue, [line("soon1"), line("soon2")], window_s=3600)
    first = queue.take("gpu0")
    assert first is not None and (first.batch_id, first.custom_id) == (soon, "soon1")
    queue.release(first)
    order = [queue.take("gpu0") for _ in range(3)]
    assert [(r.batch_id, r.custom_id) for r in order if r] == [(soon, "soon1"), (soon, "soon2"), (late, "late")]
    assert queue.take("gpu0") is None


def test_results_are_durable_and_a_restart_neither_loses_nor_redoes(tmp_path: Path) -> None:
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    batch_id = submit(store, queue, [line(f"r{i}") for i in range(4)])
    for _ in range(2):
        req = queue.take("gpu0")
        assert req is not None
        queue.complete(req, True, {"custom_id": req.custom_id, "response": {"status_code": 200}}, 5, 2.0)
    in_flight = queue.take("gpu0")  # in flight when the process dies: not recorded
    assert in_flight is not None
    store.close()
    store2, queue2 = new_queue(tmp_path, wall)
    queue2.start()
    try:
        left = []
        while (req := queue2.take("gpu0")) is not None:
            left.append(req.custom_id)
            queue2.complete(req, True, {"custom_id": req.custom_id, "response": {"status_code": 200}}, 5, 2.0)
        assert sorted(left) == ["r2", "r3"]
        assert not store2.record_result(req or in_flight, True, {}, 1)  # a late duplicate is not recorded
        queue2.maintain()
        batch = store2.get_batch(batch_id)
        assert batch is not None and batch["status"] == "completed"
        assert batch["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
        assert batch["heat"]["tokens"] == 20
        output = store2.file_path(batch["output_file_id"]).read_text().splitlines()
        assert sorted(json.loads(x)["custom_id"] for x in output) == ["r0", "r1", "r2", "r3"]
        assert batch["error_file_id"] is None
        assert not list((tmp_path / "batch" / "files").glob("*.tmp"))
    finally:
        queue2.stop()


def test_cancel_and_expiry_close_the_batch_with_what_was_done(tmp_path: Path) -> None:
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    cancelled = submit(store, queue, [line("c0"), line("c1")], window_s=86400)
    expiring = submit(store, queue, [line("e0"), line("e1")], window_s=600)
    req = queue.take("gpu0")  # e0: the earlier deadline
    assert req is not None and req.custom_id == "e0"
    queue.complete(req, True, {"custom_id": "e0", "response": {"status_code": 200}}, 1, 1.0)
    assert store.set_status(cancelled, "cancelling", only_from=("validating", "in_progress"))
    wall.t += 601
    queue.maintain()
    expired, gone = store.get_batch(expiring), store.get_batch(cancelled)
    assert expired is not None and expired["status"] == "expired" and expired["expired_at"] == int(wall.t)
    assert gone is not None and gone["status"] == "cancelled" and gone["cancelled_at"] == int(wall.t)
    errors = [json.loads(x) for x in store.file_path(expired["error_file_id"]).read_text().splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("e1", "batch_expired")]
    assert queue.take("gpu0") is None  # nothing of either is run any more
    assert not store.set_status(cancelled, "cancelling", only_from=("validating", "in_progress"))


def test_a_request_in_flight_when_its_batch_expires_is_let_go_and_the_queue_goes_on(tmp_path: Path) -> None:
    """The worker hands it back after the expiry: no KeyError, no worker lost, the next batch runs."""
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    expiring = submit(store, queue, [line("e0"), line("e1")], window_s=600)
    req = queue.take("gpu0")
    assert req is not None and req.custom_id == "e0"
    wall.t += 601
    queue.maintain()
    assert (store.get_batch(expiring) or {})["status"] == "expired"
    queue.release(req)  # the server was slow: the worker gives up on it only now
    assert not queue.has_work() and queue.take("gpu0") is None
    later = submit(store, queue, [line("n0")])
    assert queue.has_work()
    nxt = queue.take("gpu0")
    assert nxt is not None and nxt.batch_id == later
    queue.complete(nxt, True, {"custom_id": "n0", "response": {"status_code": 200}}, 1, 1.0)
    queue.maintain()
    queue.maintain()
    assert (store.get_batch(later) or {})["status"] in ("finalizing", "completed")


def test_validating_a_large_batch_writes_it_without_holding_the_queue(tmp_path: Path) -> None:
    """The control thread reads the queue every tick: the SQLite insert runs with the queue's lock free."""
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    held: list[bool] = []
    insert = store.insert_requests

    def watched(batch_id: str, requests: list[Any]) -> None:
        held.append(queue._lock.locked())
        insert(batch_id, requests)

    store.insert_requests = watched  # type: ignore[method-assign]
    batch = submit(store, queue, [line(f"r{i}") for i in range(2000)])
    assert held == [False]
    assert (store.get_batch(batch) or {})["status"] == "in_progress" and queue.summary().requests_left == 2000


def test_a_deadline_at_risk_makes_work_due_until_the_batch_is_done(tmp_path: Path) -> None:
    wall = Wall()
    store, queue = new_queue(tmp_path, wall, slots=2)
    queue.s_per_request = 60.0
    n = 40  # 40 × 60 s ÷ 2 slots = 20 min of work
    batch_id = submit(store, queue, [line(f"r{i}") for i in range(n)], window_s=6 * 3600)
    work_s = n * 60.0 / 2
    latest_start = 6 * 3600 - (work_s * SAFETY + MARGIN_S)
    relaxed = submit(store, queue, [line("later")], window_s=48 * 3600)
    queue.set_heat_wanted(False)
    wall.t += latest_start - 60
    assert queue.due_level(wall.t) == 0.0  # time to spare: wait for heat
    assert queue.take("gpu0") is None  # and nothing starts while no heat is wanted
    wall.t += 61
    assert queue.due_level(wall.t) == 1.0
    assert queue.summary().due
    assert (queue.summary().queued, queue.summary().in_progress) == (2, 0)  # nothing started yet
    first = queue.take("gpu0")
    assert first is not None
    queue.release(first)
    assert (queue.summary().queued, queue.summary().in_progress) == (1, 1)
    for _ in range(n - 1):  # running: the rule stays on though the slack grows again
        req = queue.take("gpu0")
        assert req is not None
        queue.complete(req, True, {"custom_id": req.custom_id}, 1, 60.0)
        assert queue.due_level(wall.t) == 1.0
    last = queue.take("gpu0")
    assert last is not None and last.batch_id == batch_id
    queue.complete(last, True, {"custom_id": last.custom_id}, 1, 60.0)
    assert queue.due_level(wall.t) == 0.0
    assert queue.take("gpu0") is None  # the relaxed batch waits for heat ...
    queue.set_heat_wanted(True)
    later = queue.take("gpu0")  # ... and runs when it is wanted
    assert later is not None and later.batch_id == relaxed
    queue.maintain()
    done = store.get_batch(batch_id)
    assert done is not None and done["status"] == "completed"


def test_a_plan_that_makes_the_works_heat_lets_the_rule_wait_until_it_only_just_fits_flat_out(
    tmp_path: Path,
) -> None:
    wall = Wall()
    store, queue = new_queue(tmp_path, wall, slots=2)
    queue.s_per_request = 60.0
    submit(store, queue, [line(f"r{i}") for i in range(40)], window_s=6 * 3600)  # 20 min at the efficient cap
    deadline = wall.t + 6 * 3600
    wall.t = deadline - (10 * 60 + MARGIN_S) - 60  # full power (2× the work rate) does it in 10 min
    assert at_risk(wall.t, [(deadline, 20 * 60.0)]) == 1  # unplanned, the rule would run it by now
    assert queue.due_level(wall.t, full_speedup=2.0) == 0.0  # the plan runs it: wait
    wall.t += 61
    assert queue.due_level(wall.t, full_speedup=2.0) == FLAT_OUT  # it only just fits: flat out, now
    # What the planner is told: due by the deadline less the margin, the heat of the work at full power.
    assert work_for_plan([(7200.0, 600.0)], full_speedup=2.0, full_heat_w=280.0) == ((7200.0 - MARGIN_S, 84000.0),)


def test_energy_is_shared_by_running_time_among_the_batches_on_that_gpu(tmp_path: Path) -> None:
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    a = submit(store, queue, [line("a0"), line("a1")], window_s=3600)
    b = submit(store, queue, [line("b0")], window_s=7200)
    a0, a1, b0 = (queue.take("gpu0") for _ in range(3))
    assert a0 and a1 and b0
    wall.t += 10
    queue.complete(a0, True, {"custom_id": "a0"}, 1, 10.0)  # finished between ticks: still charged its 10 s
    wall.t += 10  # a1 and b0 ran 20 s each
    queue.charge("gpu0", 5000.0, wanted=True, price=0.36, carbon=360.0)  # a: 30 of 50 busy seconds, b: 20
    wall.t += 10
    queue.charge("gpu0", 2000.0, wanted=False)  # a1 and b0 10 s each since the last charge; no price known
    queue.charge("gpu1", 1e6, wanted=True)  # another GPU runs none of them
    queue.maintain()
    batch_a, batch_b = store.get_batch(a), store.get_batch(b)
    assert batch_a is not None and batch_b is not None
    assert batch_a["heat"]["energy_kwh"] == pytest.approx(4000 / 3.6e6, rel=1e-6)
    assert batch_b["heat"]["energy_kwh"] == pytest.approx(3000 / 3.6e6, rel=1e-6)
    assert batch_a["heat"]["heat_reused_share"] == 0.75
    # 3000 J of a's at 0.36 a kWh and 360 g/kWh; its other 1000 J had none: cost and CO2 of what is known
    assert batch_a["heat"]["cost"] == pytest.approx(3000 / 3.6e6 * 0.36) and batch_a["heat"]["co2_g"] == 0.3
    c = submit(store, queue, [line("c0")], window_s=600)
    c0 = queue.take("gpu0")
    assert c0 is not None and c0.batch_id == c
    wall.t += 0.05
    queue.complete(c0, True, {"custom_id": "c0"}, 1, 0.05)
    queue.charge("gpu0", 1.5, wanted=True)  # c0, a1, b0 ran the same 50 ms: half a joule each, still counted
    queue.maintain()
    batch_c = store.get_batch(c)
    assert batch_c is not None and batch_c["heat"]["energy_kwh"] == pytest.approx(0.5 / 3.6e6, rel=1e-3)
    assert batch_c["heat"]["cost"] is None and batch_c["heat"]["co2_g"] is None  # drawn with no price or carbon


CFG = """
mqtt: null
zones:
  - name: office
    temperature: {topic: t}
    setpoint: {topic: s}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: sim
    workload: {type: openai, url: "http://127.0.0.1:1/v1", model: m, jobs: /tmp/x}
"""


def warm_room(now_s: float) -> ZoneInputs:
    return ZoneInputs(temperature=Reading(value=22.0, at_s=now_s), setpoint=Reading(value=20.0, at_s=now_s))


@pytest.mark.parametrize(
    ("mode", "due", "max_power_w", "expect_level"),
    [
        ("heat", 0.0, None, 0.0),
        ("heat", 1.0, None, 1.0),
        ("off", 1.0, None, 0.0),
        ("heat", 1.0, 0.0001, 0.0),
        ("heat", FLAT_OUT, None, 1.0),
    ],
)
def test_due_work_runs_at_the_efficient_cap_in_a_warm_room_but_not_when_off(
    mode: str, due: float, max_power_w: float | None, expect_level: float
) -> None:
    cfg = parse_config(CFG)
    caps = GpuCaps(min_limit_w=100, max_limit_w=300, idle_w=20)
    now = [1000.0]
    ctl = NodeController(cfg, {"gpu0": caps}, time_fn=lambda: now[0])
    out = ctl.step(
        NodeInputs(
            mode=mode,
            zones={"office": warm_room(now[0])},
            max_power_w=max_power_w,
            work_due={"gpu0": due},
        )
    )
    cmd = out.gpus["gpu0"]
    assert out.zones["office"].demand_w == 0.0  # the room wants nothing
    assert cmd.level == pytest.approx(expect_level)
    if expect_level:  # at the efficient cap; flat out for the planner's rule
        full = due == FLAT_OUT
        assert cmd.power_limit_w == pytest.approx(300.0 if full else ctl.allocators["gpu0"].model.efficient_cap_w)


def test_the_simulator_keeps_deadlines_in_a_warm_room_and_reuses_heat_in_a_cold_one() -> None:
    from heatctl.sim.report import kpis
    from heatctl.sim.runner import simulate
    from heatctl.sim.scenario import Scenario

    def run(outdoor_c: float, setpoint_c: float) -> dict[str, float]:
        scen = Scenario.model_validate(
            {
                "duration_h": 20,
                "step_s": 60,
                "weather": {"constant_c": outdoor_c},
                "schedule": [{"at": "00:00", "setpoint_c": setpoint_c}],
                "batches": [{"at_h": 1, "requests": 10, "work_per_request": 60 * 60, "window_h": 12}],
            }
        )
        result = simulate(scen)
        assert result.batches is not None
        (batch,) = result.batches.batches
        assert batch.on_time and batch.done_s is not None
        return kpis(result) | {"done_h": batch.done_s / 3600}

    warm = run(24.0, 15.0)  # no heat wanted: the batch waits, then runs by its deadline
    assert warm["batches_on_time"] == 1 and warm["batch_heat_reused_share"] == 0.0
    assert warm["done_h"] > 4  # it waited for its latest safe start (at most 13 h, its deadline: on_time)
    cold = run(0.0, 21.0)  # heat wanted: it runs at once, as heat
    assert cold["batches_on_time"] == 1 and cold["batch_heat_reused_share"] > 0.95
    assert cold["done_h"] < warm["done_h"]


def test_status_says_what_waits_and_when_heat_finds_no_work() -> None:
    from heatctl.status import describe_state

    state = {
        "mode": "heat",
        "heat_w": 20,
        "work_starved": True,
        "batch_api": "http://127.0.0.1:8090/v1",
        "batches": {
            "queued": 2,
            "in_progress": 1,
            "requests_left": 40,
            "next_deadline": "2026-11-24T06:00:00+00:00",
            "due": True,
        },
    }
    text = describe_state(state, node_id="n", online=True)
    assert "batches: 2 queued, 1 in progress, 40 request(s) left, next deadline 2026-11-24T06:00:00+00:00" in text
    assert "running for a deadline" in text
    assert "heat wanted but no work queued" in text
    assert "batches" not in describe_state({"mode": "heat"}, node_id="n", online=True)


def test_a_poison_line_fails_its_batch_alone_and_never_stops_a_start(tmp_path: Path) -> None:
    """50,000-deep nesting: a clear error on its line, the next batch validates and runs, a restart starts."""
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    poison = submit(store, queue, [line("ok"), "[" * 50_000 + "]" * 50_000])
    good = submit(store, queue, [line("g0")])
    bad = store.get_batch(poison) or {}
    assert bad["status"] == "failed"
    assert [(e["code"], e["line"]) for e in bad["errors"]["data"]] == [("invalid_json_line", 2)]
    assert "nested deeper than 64" in bad["errors"]["data"][0]["message"]
    assert (store.get_batch(good) or {})["status"] == "in_progress"
    store.close()
    broken = BatchStore(tmp_path / "batch", wall_fn=wall)

    def explode(*args: Any) -> None:
        raise RuntimeError("a bug in validation")

    queue = BatchQueue(broken, api_cfg(), slots=1, mono_fn=wall)
    queue._validate = explode  # type: ignore[method-assign]
    record = broken.add_file("in.jsonl", "batch", [(line("x") + "\n").encode()])
    later = broken.create_batch(record.id, CHAT, "24h", 86400, {})
    queue.start()  # validation of every batch fails: the start does not
    try:
        assert (broken.get_batch(str(later["id"])) or {})["status"] == "failed"
        assert queue.take("gpu0") is not None  # the good batch queued before the restart runs on
    finally:
        queue.stop()
        broken.close()


@pytest.mark.parametrize("damage", [b"", b"SQLite format 3\x00" + b"\x13" * 500])
def test_a_damaged_batch_database_is_moved_aside_and_said_never_emptied(tmp_path: Path, damage: bytes) -> None:
    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    submit(store, queue, [line("a")])
    store.close()
    db = tmp_path / "batch" / "batch.db"
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    db.write_bytes(damage)  # cut off to nothing, or torn
    again = BatchStore(tmp_path / "batch", wall_fn=wall)
    try:
        assert again.damaged is not None and "moved to batch.db.damaged-" in again.damaged
        kept = list((tmp_path / "batch").glob("batch.db.damaged-*"))
        assert [p.read_bytes() for p in kept if p.name.endswith(tuple("0123456789"))] == [damage]
        assert again.list_batches(None, 10) == ([], False)  # a store that works, said to be new
    finally:
        again.close()


class PoolStub:
    """The house's pool as the queue sees it: its name, this node, what it was given to send."""

    def __init__(self) -> None:
        from heatctl.config import HouseConfig

        self.cfg = HouseConfig(budget_w=900.0, name="home")
        self.node_id = "kitchen"
        self.energy: list[tuple[str, str, str, list[float]]] = []
        self.published: list[str] = []
        self.on_result: Any = None
        self.on_energy: Any = None

    def send_energy(self, pool: str, origin: str, batch_id: str, tally: list[float]) -> None:
        self.energy.append((pool, origin, batch_id, tally))

    def publish_batch(self, requests: list[Any]) -> bool:
        self.published += [r.custom_id for r in requests]
        return True

    def drop_batch(self, batch_id: str) -> None:
        self.published.append(f"dropped {batch_id}")

    def peer_live(self, node: str) -> bool:
        return node == "study"


def test_another_nodes_request_run_here_sends_all_its_energy_back_even_charged_after_it_ended(tmp_path: Path) -> None:
    from heatctl.house.pool import PooledRequest

    wall = Wall()
    _, queue = new_queue(tmp_path, wall)
    pool = PoolStub()
    queue.attach_pool(pool)  # type: ignore[arg-type]
    req = PooledRequest("batch_x", 1, "q1", CHAT, "{}", int(wall.t) + 3600, 1, "study", "home")
    queue.track(req, "gpu0")
    wall.t += 10.0
    queue.untrack(req)  # done: 10 s of the GPU's time, not yet charged
    queue.maintain()  # the manager's flush comes before the tick's charge
    queue.charge("gpu0", 2000.0, True)  # the tick: the GPU's energy since the last one
    queue.maintain()
    assert [(p, o, b) for p, o, b, _ in pool.energy] == [("home", "study", "batch_x")]
    assert pool.energy[0][3][:2] == [2000.0, 2000.0]  # all of it, and as heat wanted


def test_a_pooled_batch_is_counted_here_runs_from_the_pool_and_closes_once_every_result_is_back(
    tmp_path: Path,
) -> None:
    from heatctl.batch.store import QueuedRequest

    wall = Wall()
    store, queue = new_queue(tmp_path, wall)
    pool = PoolStub()
    queue.attach_pool(pool)  # type: ignore[arg-type]
    batch_id = submit(store, queue, [line("a"), line("b")])
    assert pool.published == ["a", "b"] and not queue.has_work()  # in the pool, not in the local queue
    assert queue.pool_work() == ((float(store.batch_row(batch_id)["expires_at"]), 2.0),)  # type: ignore[index]
    result = {"custom_id": "a", "response": {"status_code": 200, "body": {}}}
    first = QueuedRequest(batch_id, 1, "a", "", "", 0, 0)
    assert queue.record_pooled(first, True, result, tokens=5, node="study", elapsed_s=2.0)
    assert not queue.record_pooled(first, True, result, tokens=5, node="study", elapsed_s=2.0)  # run twice: once
    assert queue.record_pooled(
        QueuedRequest(batch_id, 2, "b", "", "", 0, 0), True, result, tokens=5, node="study", elapsed_s=2.0
    )
    queue.maintain()
    assert store.get_batch(batch_id)["status"] == "finalizing"  # type: ignore[index]  # study's energy is due
    queue.add_pooled_energy(batch_id, "study", [100.0, 100.0, 0.0, 100.0, 0.0, 100.0])
    queue.maintain()
    batch = store.get_batch(batch_id)
    assert batch is not None and batch["status"] == "completed"
    assert batch["heat"]["by_node"] == {"study": 2} and batch["heat"]["energy_kwh"] == pytest.approx(
        100 / 3.6e6, rel=1e-3
    )
