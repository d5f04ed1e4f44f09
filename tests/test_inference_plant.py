"""An LLM server's GPU end to end: the real llama.cpp test server, the real pynvml bindings on the
fake driver whose draw follows the server's requests in flight. ``calibrate`` measures the
surface; ``run`` then holds the room with the GPU drawing what the allocator expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heatctl.calibrate import load_calibration, surface_path
from heatctl.cli import main
from heatctl.config import parse_config
from heatctl.control.surface import InferenceSurface, Limits
from heatctl.service import Service
from tests.conftest import FakeClock
from tests.services import DrawFromServer, FakeNvml, TinyLLM, wait_until

pytestmark = pytest.mark.integration
LIMITS = Limits(idle_w=30.0, min_limit_w=100.0, max_limit_w=300.0)
# The card's true surface (the fake driver's): at one request far below the cap, the batch sets the draw.
CARD = InferenceSurface([(1, 35.0, 140.0), (2, 66.0, 180.0), (4, 120.0, 250.0)], LIMITS, max_concurrency=4)


def config(state_dir: Path, server: TinyLLM, jobs: Path, max_power_w: float) -> str:
    return f"""
node_id: llm
state_dir: {state_dir}
mqtt: null
max_power_w: {max_power_w}
zones:
  - name: office
    temperature: {{topic: t}}
    setpoint: {{topic: s}}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: nvml
    index: 0
    workload: {{type: openai, url: "{server.url}", model: tinyllm, max_concurrency: 4, jobs: "{jobs}",
                request_timeout_s: 30}}
"""


def test_calibrate_then_run_draws_what_the_allocator_expected(
    fake_nvml: FakeNvml, tinyllm: TinyLLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_nvml.configure(min_limit_w=100, max_limit_w=300, default_limit_w=300, idle_w=30)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    cfg_path = tmp_path / "heatctl.yaml"
    cfg_path.write_text(config(tmp_path / "state", tinyllm, jobs, max_power_w=300))
    with DrawFromServer(fake_nvml, tinyllm.url, CARD) as draw:
        chart = tmp_path / "surface.png"
        assert main(["calibrate", "-c", str(cfg_path), "--minutes", "0.4", "--plot", str(chart)]) == 0
        out = capsys.readouterr()
        assert "cap W" in out.out and "tokens/J" in out.out and chart.stat().st_size > 10_000
        assert "13/13" in out.err  # the progress bar got to the end
        assert fake_nvml.limit_w() in (None, 300.0)  # the card's own limit is back
        cfg = parse_config(cfg_path.read_text())
        calibration = load_calibration(cfg.resolved_state_dir(), cfg.gpus[0])
        assert calibration is not None and surface_path(cfg.resolved_state_dir(), "gpu0", "tinyllm").exists()
        measured = {n: d for n, _, d in calibration.uncapped}
        for n in (1, 2, 4):  # the batches' uncapped draw as the fake card makes it, less the server's gaps
            # (on a loaded CI machine the gaps between a tiny model's requests grow: a wide band)
            assert 0.5 * CARD.uncapped(n)[1] <= measured[n] <= 1.02 * CARD.uncapped(n)[1], calibration.uncapped
        assert measured[1] < measured[2] < measured[4]  # the draw follows the batch
        assert max(draw.seen) == 4

        # run: the room cold, the node capped below what the full batch draws (as this machine's server
        # measured it): the allocator picks its point from the calibration, the cap binding.
        cap_w = round(0.85 * measured[4])
        cfg = cfg.model_copy(update={"max_power_w": float(cap_w)})
        (jobs / "work.jsonl").write_text(
            "".join(
                json.dumps({"id": f"j{i}", "messages": [{"role": "user", "content": "warm"}], "max_tokens": 32}) + "\n"
                for i in range(5000)
            )
        )
        clock = FakeClock()
        svc = Service(cfg, clock=clock)  # type: ignore[arg-type]
        svc.start()
        try:
            surface = svc.controller.allocators["gpu0"].surface  # type: ignore[union-attr]
            assert surface is not None and surface.prior.uncapped(4)[1] == pytest.approx(measured[4])  # the calibration
            ratios = []
            for _ in range(12):
                clock.advance(2.0)
                svc.store.put("office", "temperature", 18.0, "t")
                svc.store.put("office", "setpoint", 21.0, "s")
                snap = svc.tick()
                gpu = snap.gpus["gpu0"]
                n = round(gpu.level * 4)
                if n and gpu.power_limit_w is not None and gpu.power_w is not None:
                    expected_w = surface.surface.at(n, gpu.power_limit_w)[0]
                    ratios.append(gpu.power_w / expected_w)
                # The server's requests run in real time and the driver's draw follows them: a few looks.
                looked = len(draw.seen)
                wait_until(lambda looked=looked: len(draw.seen) >= looked + 8, 10, "the draw following the server")  # type: ignore[misc]
            assert snap.gpus["gpu0"].power_limit_w == pytest.approx(cap_w, abs=5.0)
            assert ratios and abs(sorted(ratios)[len(ratios) // 2] - 1.0) <= 0.10, ratios
        finally:
            svc.shutdown()
