"""Command line: run | demo | simulate | check | config schema."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from heatctl import __version__
from heatctl.errors import ConfigError, HeatctlError, InstanceConflict

if TYPE_CHECKING:
    from heatctl.config import Config

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit 2: no usage dump, never a traceback."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS or action.required:
            return action.help
        return super()._get_help_string(action)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    fmt = _Help
    parser = _Parser(
        prog="heatctl",
        description="Heat a room with the GPU that runs your local AI: thermostat in, exactly the watts it needs out.",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"heatctl {__version__}")
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="log level (default: the config's log_level, else info)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="json: one object per line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=fmt)

    run = command("run", "the service: read the thermostat, steer the GPU, publish state (until SIGTERM)")
    run.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")

    demo = command("demo", "the service on embedded defaults: an embedded MQTT broker, a simulated room and GPU")
    demo.add_argument("--speed", type=_positive, default=60.0, help="simulated seconds per real second")
    demo.add_argument("--port", type=_port, default=1883, help="port of the embedded MQTT broker")
    demo.add_argument("--duration", type=_positive, default=None, help="stop after this many real seconds")

    sim = command("simulate", "closed-loop simulation in virtual time: KPIs, a time series and a plot")
    sim.add_argument("--scenario", type=Path, default=None, help="scenario YAML (default: a cold week)")
    sim.add_argument("-c", "--config", type=Path, default=None, help="config YAML whose control settings to use")
    sim.add_argument(
        "--controller",
        choices=(
            "heatctl",
            "hysteresis",
            "dutycycle",
            "main-only",
            "side-by-side",
            "oracle",
            "cap",
            "concurrency",
            "round-robin",
        ),
        default="heatctl",
        help="who controls (main-only, side-by-side: baselines beside a scenario's main_heating; "
        "round-robin: a house scenario's pool dealt out evenly)",
    )
    sim.add_argument("--out", type=Path, default=Path("sim-out"), help="output directory")
    sim.add_argument("--zone", default=None, help="the zone of the config to simulate (when it has several)")

    check = command("check", "validate the config and reach every configured part; one row each")
    check.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")

    init = command("init", "find thermostats, window contacts, weather and GPUs; write a safe first config")
    init.add_argument("--mqtt", metavar="HOST[:PORT]", default=None, help="the broker zigbee2mqtt uses")
    init.add_argument("--mqtt-username", default=None, help="MQTT user (the password goes to secrets.yaml)")
    init.add_argument("--mqtt-password", default=None, help="MQTT password, written to secrets.yaml")
    init.add_argument("--ha", metavar="URL", default=None, help="Home Assistant, e.g. http://homeassistant.local:8123")
    init.add_argument("--ha-token", default=None, help="a long-lived access token (written to secrets.yaml)")
    init.add_argument("--out", type=Path, default=Path("heatctl.yaml"), help="the config file to write")
    init.add_argument("--mode", choices=("heat", "off"), default="heat", help="heatctl's mode when it first starts")
    init.add_argument("--yes", "-y", action="store_true", help="no questions: take the first thermostat found")
    init.add_argument("--house", metavar="NATS_URL", default=None, help="the NATS server of this house's heaters")
    init.add_argument("--house-budget-w", type=_positive, default=None, help="their power budget together (W)")

    status = command("status", "what the running service is doing, in words (from its MQTT state)")
    status.add_argument("-c", "--config", required=True, type=Path, help="the service's YAML config file")
    status.add_argument("--follow", "-f", action="store_true", help="keep printing every new state until Ctrl-C")

    model = command("model", "what the planner learned of each room (from state_dir)")
    model.add_argument("-c", "--config", required=True, type=Path, help="the service's YAML config file")
    plan = command("plan", "the planner's current plan for each zone (from state_dir)")
    plan.add_argument("-c", "--config", required=True, type=Path, help="the service's YAML config file")
    plan.add_argument("--plot", type=Path, default=None, help="also draw it into this PNG file")

    calibrate = command("calibrate", "measure an LLM server's GPU: draw and tokens/s by cap and requests in flight")
    calibrate.add_argument("-c", "--config", required=True, type=Path, help="the service's YAML config file")
    calibrate.add_argument("--gpu", default=None, help="the GPU to measure (when several serve an LLM)")
    calibrate.add_argument("--minutes", type=_positive, default=10.0, help="how long the whole sweep takes")
    calibrate.add_argument("--plot", type=Path, default=None, help="also draw tokens/J by cap and batch into this PNG")

    report = command("report", "what the heat was worth, day by day: heat used, its worth, electricity, CO2, tokens")
    report.add_argument("-c", "--config", required=True, type=Path, help="the service's YAML config file")
    report.add_argument("--since", default="30d", help="how far back: 30d, 2w (default 30d)")
    report.add_argument("--plot", type=Path, default=None, help="also draw it into this PNG file")

    restore = command("restore", "restore GPU power limits and resume workloads a killed run left behind")
    restore.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")

    config = command("config", "config tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION", parser_class=_Parser)
    config_sub.add_parser(
        "schema", help="print the config's JSON Schema (for editors)", description="print the config's JSON Schema"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from heatctl.logs import setup_logging

    setup_logging(args.log_level or "info", args.log_format)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print("configuration problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except InstanceConflict as exc:
        print(f"heatctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HeatctlError as exc:
        print(f"heatctl: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `heatctl status --follow | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "simulate": _simulate,
        "config": _config_schema,
        "check": _check,
        "status": _status,
        "init": _init,
        "restore": lambda a: _restore(a.config),
        "calibrate": _calibrate,
        "report": _report,
        "model": _model,
        "plan": _plan,
        "run": _run,
        "demo": _demo,
    }
    return handlers[args.command](args)


def _config_schema(args: argparse.Namespace) -> int:
    from heatctl.config import Config

    print(json.dumps(Config.model_json_schema(), indent=2))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from heatctl.check import run_check

    return run_check(args.config)


def _init(args: argparse.Namespace) -> int:
    from heatctl.init import run_init

    return run_init(
        ha_url=args.ha,
        ha_token=args.ha_token,
        mqtt=args.mqtt,
        mqtt_username=args.mqtt_username,
        mqtt_password=args.mqtt_password,
        out=args.out,
        yes=args.yes,
        mode=args.mode,
        house=args.house,
        house_budget_w=args.house_budget_w,
    )


def _status(args: argparse.Namespace) -> int:
    from heatctl.config import load_config
    from heatctl.status import run_status

    return run_status(load_config(args.config), follow=args.follow)


def _run(args: argparse.Namespace) -> int:
    from heatctl.config import load_config
    from heatctl.logs import apply_config_levels

    cfg = load_config(args.config)
    if args.log_level is None:
        apply_config_levels(cfg)
    from heatctl.daemon import run_service

    return run_service(cfg)


def _demo(args: argparse.Namespace) -> int:
    from heatctl.demo import run_demo

    return run_demo(speed=args.speed, port=args.port, duration_s=args.duration)


def _model(args: argparse.Namespace) -> int:
    from heatctl.config import load_config
    from heatctl.planner.show import model_text

    print(model_text(load_config(args.config)))
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    from heatctl.config import load_config
    from heatctl.planner.show import plan_documents, plan_text, plot_plans

    docs = plan_documents(load_config(args.config))
    print("\n\n".join(plan_text(d) for d in docs))
    if args.plot is not None:
        if not any(d.get("steps") for d in docs):
            print(f"heatctl: no plan to draw yet; {args.plot} not written", file=sys.stderr)
            return EXIT_RUNTIME
        plot_plans(docs, args.plot)
        print(f"wrote {args.plot}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from heatctl.report import run_report

    return run_report(args.config, args.since, args.plot)


def _calibrate(args: argparse.Namespace) -> int:
    from heatctl.calibrate import run_calibrate

    return run_calibrate(args.config, args.gpu, args.minutes, args.plot)


def _restore(path: Path) -> int:
    from heatctl.config import load_config
    from heatctl.locks import state_dir_lock

    cfg = load_config(path)
    state_dir = cfg.resolved_state_dir()
    lock = state_dir_lock(state_dir)
    lock.acquire("heatctl restore")  # a live run's limits and held-back heating are its own to give back
    try:
        return _restore_left_behind(cfg, state_dir)
    finally:
        lock.release()


def _restore_left_behind(cfg: Config, state_dir: Path) -> int:
    from heatctl.workloads.process import resume_recorded

    done: list[str] = []
    for gpu in cfg.gpus:
        if gpu.workload.type == "process":
            done += resume_recorded(gpu.id, gpu.workload, state_dir)
    if any(g.backend == "nvml" for g in cfg.gpus):
        from heatctl.gpu.nvml import restore_recorded_limits

        try:
            done += restore_recorded_limits(state_dir)
        except HeatctlError as exc:
            done.append(f"cannot restore power limits: {exc}")
    if any(z.main_heating is not None for z in cfg.zones):
        from heatctl.mainheat.steer import give_back_recorded

        done += give_back_recorded(cfg, state_dir)
    nothing = "nothing left behind: no power limits to restore, no paused workloads, no main heating held back"
    print("\n".join(done) if done else nothing)
    return EXIT_RUNTIME if any("cannot" in line for line in done) else EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from heatctl.config import load_config
    from heatctl.sim.report import format_table, kpis, write_outputs
    from heatctl.sim.runner import simulate
    from heatctl.sim.scenario import default_scenario_path, load_scenario

    scenario_path = args.scenario or default_scenario_path()
    from heatctl.sim.house import is_house_scenario

    if is_house_scenario(scenario_path):
        return _simulate_house(args, scenario_path)
    if args.controller == "round-robin":
        print("error: --controller round-robin is for a house scenario (one with nodes:)", file=sys.stderr)
        return EXIT_USAGE
    scenario = load_scenario(scenario_path)
    config = load_config(args.config) if args.config else None
    label = scenario.name or scenario_path.stem
    print(
        f"simulating {label}: {scenario.duration_h:g} h in steps of {scenario.step_s:g} s, "
        f"controller {args.controller}",
        file=sys.stderr,
    )
    result = simulate(
        scenario,
        config,
        controller=args.controller,
        zone_name=args.zone,
        base_dir=scenario_path.parent,
        progress=_progress_printer(),
    )
    summary = kpis(result)
    paths = write_outputs(result, summary, args.out)
    print(format_table({args.controller: summary}))
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


def _simulate_house(args: argparse.Namespace, scenario_path: Path) -> int:
    """A house scenario: its nodes together, against one budget and one pool; with heatctl, the
    round-robin baseline run beside it."""
    from heatctl.config import load_config
    from heatctl.sim.house import (
        HOUSE_CONTROLLERS,
        HouseResult,
        house_kpis,
        load_house_scenario,
        simulate_house,
        write_house_outputs,
    )
    from heatctl.sim.report import format_table, kpis

    if args.controller not in HOUSE_CONTROLLERS:
        print(f"error: a house scenario runs with --controller {' or '.join(HOUSE_CONTROLLERS)}", file=sys.stderr)
        return EXIT_USAGE
    house = load_house_scenario(scenario_path)
    config = load_config(args.config) if args.config else None
    controllers = [args.controller] + (["round-robin"] if args.controller == "heatctl" else [])
    results: dict[str, HouseResult] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for controller in controllers:
        print(
            f"simulating the house {house.name or scenario_path.stem}: {len(house.nodes)} nodes, "
            f"{house.duration_h:g} h in steps of {house.step_s:g} s, controller {controller}",
            file=sys.stderr,
        )
        result = simulate_house(
            house, config, controller=controller, base_dir=scenario_path.parent, progress=_progress_printer()
        )
        results[controller] = result
        summaries[controller] = {"house": house_kpis(result), "nodes": {n: kpis(r) for n, r in result.nodes.items()}}
    print(format_table({c: s["house"] for c, s in summaries.items()}))
    print()
    print(format_table(summaries[controllers[0]]["nodes"]))  # each room under the first controller
    paths = write_house_outputs(results, summaries, args.out)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


def _progress_printer() -> Callable[[float], None]:
    tty = sys.stderr.isatty()
    last = [-1]

    def progress(fraction: float) -> None:
        pct = int(fraction * 100)
        if tty and pct != last[0]:
            print(f"\r  {pct:3d} %", end="" if pct < 100 else "\n", file=sys.stderr, flush=True)
        elif not tty and pct // 25 != last[0] // 25:
            print(f"  {pct:3d} %", file=sys.stderr, flush=True)
        last[0] = pct

    return progress
