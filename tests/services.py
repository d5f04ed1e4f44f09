"""Fixtures that start real services on free loopback ports, and stop them by PID."""

from __future__ import annotations

import collections
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion


def heatctl(
    *args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m heatctl ARGS`` as a user runs it: its exit code and what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "heatctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll a condition (not a fixed sleep): returns its first truthy value or fails the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """A real Mosquitto broker with its own config file, on a free port; restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = self.conf.with_suffix(".log").open("ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stderr=self.log)
        wait_until(lambda: port_open(self.port), 10.0, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.proc is not None:
            self.log.close()
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.fail("mosquitto is not installed: run tests/run.sh (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


class NatsServer:
    """A real ``nats-server -js`` (Debian's) on a free port, its JetStream store in the test's folder;
    restartable on the same port (an outage and a return). With ``conf``, it runs from that config
    (one of ``deploy/nats``'s, its ports, names and folders made the test's)."""

    def __init__(self, workdir: Path, *, name: str = "nats", conf: str | None = None) -> None:
        self.exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.port = free_port()
        self.store = workdir / f"{name}-jetstream"
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self.conf_path: Path | None = None
        if conf is not None:
            self.conf_path = workdir / f"{name}.conf"
            self.conf_path.write_text(conf.replace("store_dir: /var/lib/nats", f"store_dir: {self.store}"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["-a", "127.0.0.1", "-p", str(self.port)]
        args = (
            ["-c", str(self.conf_path), *args] if self.conf_path is not None else ["-js", "-sd", str(self.store), *args]
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([self.exe, *args], stderr=log, stdout=log)
        wait_until(lambda: port_open(self.port), 10.0, f"nats-server on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


DEPLOY_NATS = Path(__file__).resolve().parent.parent / "deploy" / "nats"


def deployed_nats_conf(name: str, changes: dict[str, str]) -> str:
    """One of ``deploy/nats``'s configs with some of its text changed (a test's ports and names)."""
    text = (DEPLOY_NATS / name).read_text()
    for old, new in changes.items():
        assert old in text, f"{name} has no {old!r}"
        text = text.replace(old, new)
    return text


class TcpLink:
    """A TCP relay standing in for a network link (a house's leaf link to the hub) that can be cut
    and mended: cut closes every connection through it and refuses new ones."""

    def __init__(self, to_port: int) -> None:
        self.to_port = to_port
        self.port = free_port()
        self.up = threading.Event()
        self.up.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                inside, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up.is_set():
                inside.close()
                continue
            try:
                outside = socket.create_connection(("127.0.0.1", self.to_port), timeout=2)
            except OSError:
                inside.close()
                continue
            with self._lock:
                self._conns += [inside, outside]
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def mend(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._server.close()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    if not (shutil.which("nats-server") or Path("/usr/sbin/nats-server").exists()):
        pytest.fail("nats-server is not installed: run tests/run.sh (apt-get install nats-server)")
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Probe:
    """A plain MQTT client for tests: publish, and record everything under some topics."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",)) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.arrivals: list[tuple[str, bytes, float]] = []  # perf_counter at arrival, for benchmarks
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"probe-{port}-{id(self)}"
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics] and self._ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self._ready.is_set, 10.0, "probe connection")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self.arrivals.append((msg.topic, msg.payload, now))

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def last_json(self, topic: str) -> Any:
        payloads = self.on(topic)
        return json.loads(payloads[-1]) if payloads and payloads[-1] else None

    def wait_json(self, topic: str, predicate: Callable[[Any], bool], timeout_s: float = 10.0) -> Any:
        def found() -> Any:
            for payload in reversed(self.on(topic)):
                if payload:
                    data = json.loads(payload)
                    if predicate(data):
                        return data
            return None

        return wait_until(found, timeout_s, f"a matching message on {topic}")

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.arrivals.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def probe(mosquitto: Mosquitto) -> Iterator[Probe]:
    p = Probe(mosquitto.port)
    yield p
    p.close()


# --- the fake NVIDIA driver ------------------------------------------------------------------

FAKENVML_SRC = Path(__file__).resolve().parent / "fakes" / "fakenvml"


@pytest.fixture(scope="session")
def fakenvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build tests/fakes/fakenvml once per session; load it as pynvml's libnvidia-ml.so.1."""
    import ctypes

    import pynvml

    out = tmp_path_factory.mktemp("fakenvml-lib")
    subprocess.run(["sh", str(FAKENVML_SRC / "build.sh"), str(out)], check=True, capture_output=True)
    lib = out / "libnvidia-ml.so.1"
    pynvml.nvmlLib = ctypes.CDLL(str(lib))
    assert hasattr(pynvml.nvmlLib, "fakenvml_version"), "loaded a real driver instead of fakenvml"
    return out


class FakeNvml:
    """One test's fake driver state: config, load and the persisted limit files."""

    def __init__(self, directory: Path, lib_dir: Path) -> None:
        self.dir = directory
        self.lib_dir = lib_dir

    def configure(self, **settings: object) -> None:
        self.dir.joinpath("config").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))

    def set_load(self, watts: float, index: int = 0) -> None:
        self.dir.joinpath(f"load{index}").write_text(f"{watts}\n")

    def limit_w(self, index: int = 0) -> float | None:
        path = self.dir / f"limit{index}"
        return float(path.read_text()) if path.exists() else None

    def env(self) -> dict[str, str]:
        import os

        return {**os.environ, "FAKENVML_DIR": str(self.dir), "LD_LIBRARY_PATH": str(self.lib_dir)}


@pytest.fixture
def fake_nvml(fakenvml_lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    import pynvml

    directory = tmp_path / "fakenvml"
    directory.mkdir()
    monkeypatch.setenv("FAKENVML_DIR", str(directory))
    monkeypatch.setenv("HEATCTL_RUN_DIR", str(tmp_path / "run"))  # this test's per-GPU locks
    fake = FakeNvml(directory, fakenvml_lib)
    fake.configure()
    yield fake
    # Leave NVML uninitialised so that the next test's config is read afresh.
    while True:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            break


# --- a real OpenAI-compatible inference server (llama.cpp, tiny model) -----------------------

TINYLLM = Path(__file__).resolve().parent / "fakes" / "tinyllm" / "serve.sh"


def tinyllm_home() -> Path:
    import os

    return Path(os.environ.get("TINYLLM_HOME", Path.home() / ".cache" / "heatctl" / "tinyllm"))


class TinyLLM:
    """llama.cpp's server on a free port; restartable on the same port (a server that dies and comes back)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = workdir / "tinyllm.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import os

        env = {**os.environ, "TINYLLM_HOME": str(tinyllm_home()), "TINYLLM_PARALLEL": "4"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(["bash", str(TINYLLM), str(self.port)], env=env, stdout=log, stderr=log)
        wait_until(self._healthy, 60, f"llama-server on port {self.port}")

    def _healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"llama-server exited: {self.log.read_text()[-2000:]}") from None
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def tinyllm_built() -> Path:
    """Build llama-server and the model once (about 6 minutes the first time; cached in TINYLLM_HOME)."""
    import os

    home = tinyllm_home()
    env = {**os.environ, "TINYLLM_HOME": str(home)}
    proc = subprocess.run(["bash", str(TINYLLM), "--setup-only"], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"building tinyllm failed:\n{proc.stderr[-3000:]}")
    return home


@pytest.fixture
def tinyllm(tinyllm_built: Path, tmp_path: Path) -> Iterator[TinyLLM]:
    server = TinyLLM(tmp_path)
    server.start()
    yield server
    server.stop()


class DrawFromServer:
    """The fake NVIDIA driver's load follows the inference server's requests in flight: a thread reads
    llama.cpp's ``requests_processing`` (its ``/metrics``) and writes the surface's uncapped draw for
    that many as the GPU's load; the driver caps it at the limit. End-to-end tests see draw follow work."""

    def __init__(self, fake: FakeNvml, server_url: str, surface: Any, every_s: float = 0.05) -> None:
        self._fake = fake
        self._metrics = server_url.rstrip("/").removesuffix("/v1") + "/metrics"
        self._surface = surface
        self._every_s = every_s
        self._stop = threading.Event()
        self.seen: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DrawFromServer:
        self._fake.set_load(self._surface.at(0, 1e9)[0])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import urllib.request

        while not self._stop.wait(self._every_s):
            try:
                with urllib.request.urlopen(self._metrics, timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                continue
            n = next(
                (
                    int(float(line.split()[1]))
                    for line in text.splitlines()
                    if line.startswith("llamacpp:requests_processing ")
                ),
                0,
            )
            self.seen.append(n)
            self._fake.set_load(self._surface.uncapped(n)[1] if n else self._surface.at(0, 1e9)[0])


# --- VictoriaMetrics: a real time-series server speaking the InfluxDB v2 write API ------------


class VictoriaMetrics:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "vm-data"
        self.log = workdir / "vm.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("victoria-metrics")
        if exe is None:
            pytest.fail("victoria-metrics is not installed: run tests/run.sh (apt-get install victoria-metrics)")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [exe, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.data}", "-loggerLevel=ERROR"],
                stdout=log,
                stderr=log,
            )
        wait_until(lambda: self._get("/health") == b"OK", 20, "victoria-metrics healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None

    def _get(self, path: str) -> bytes | None:
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return bytes(r.read())
        except OSError:
            return None

    def export(self, match: str = '{__name__=~".+"}') -> list[dict[str, Any]]:
        """Every series as exported, after flushing what was just written."""
        import urllib.parse

        self._get("/internal/force_flush")
        raw = self._get("/api/v1/export?" + urllib.parse.urlencode({"match[]": match})) or b""
        return [json.loads(line) for line in raw.splitlines() if line.strip()]


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    vm = VictoriaMetrics(tmp_path)
    vm.start()
    yield vm
    vm.stop()


# --- a real Home Assistant core on loopback -----------------------------------------------------

HA_VERSION = "2024.3.3"  # the newest release that runs on Python 3.11
# What Home Assistant itself needs to start (frontend and its dependencies) plus the MQTT
# integration; with --skip-pip it installs nothing at run time.
HA_EXTRA = [
    "josepy<2",
    "numpy",
    "Pillow==10.2.0",
    "aiohttp-fast-url-dispatcher==0.3.0",
    "aiohttp-zlib-ng==0.3.1",
    "aiohttp_cors==0.7.0",
    "home-assistant-frontend==20240307.0",
    "janus==1.0.0",
    "paho-mqtt==1.6.1",
    "psutil-home-assistant==0.0.1",
    "SQLAlchemy==2.0.27",
    "fnv-hash-fast==0.5.0",
    "securetar==2024.2.1",
    "hassil==1.6.1",
    "home-assistant-intents==2024.3.12",
]


def ha_venv() -> Path:
    import os

    return Path(os.environ.get("HEATCTL_HA_VENV", Path.home() / ".cache" / "heatctl" / "ha-venv"))


def ensure_homeassistant() -> Path:
    """A cached venv with Home Assistant core, pinned by the constraints inside its own wheel."""
    import tempfile
    import zipfile

    venv = ha_venv()
    ready = venv / f".heatctl-ready-{HA_VERSION}"
    if ready.exists():
        return venv
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*pip, "download", "-q", "--no-deps", f"homeassistant=={HA_VERSION}", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("homeassistant-*.whl"))
        constraints = Path(tmp) / "constraints.txt"
        with zipfile.ZipFile(wheel) as zf:
            constraints.write_bytes(zf.read("homeassistant/package_constraints.txt"))
        subprocess.run([*pip, "install", "-q", "-c", str(constraints), str(wheel), *HA_EXTRA], check=True)
    ready.write_text("ok\n")
    return venv


class HomeAssistant:
    """Home Assistant core with an owner, an access token and the MQTT integration on a test broker."""

    def __init__(self, venv: Path, workdir: Path, broker_port: int) -> None:
        self.venv = venv
        self.config = workdir / "ha-config"
        self.config.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.broker_port = broker_port
        self.token = ""
        self.log = workdir / "ha.log"
        self.proc: subprocess.Popen[bytes] | None = None
        (self.config / "configuration.yaml").write_text(
            "homeassistant:\n  name: heatctl-test\n  latitude: 52.0\n  longitude: 4.9\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  country: NL\n  currency: EUR\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\nconfig:\nlogger:\n  default: warning\n"
            # The recorder and its history API: what heatctl's planner learns a room from on day one.
            "recorder:\n  commit_interval: 1\nhistory:\n"
            # A real weather entity whose hourly forecast a test sets through sensor.test_hourly_forecast.
            "weather:\n  - platform: template\n    name: Forecast home\n"
            "    condition_template: cloudy\n"
            '    temperature_template: "{{ 5 }}"\n    humidity_template: "{{ 80 }}"\n'
            "    forecast_hourly_template: \"{{ state_attr('sensor.test_hourly_forecast', 'forecast') or [] }}\"\n"
        )

    def start(self) -> None:
        hass = str(self.venv / "bin" / "hass")
        subprocess.run(
            [hass, "--script", "auth", "-c", str(self.config), "add", "heatctl", "test-password-1"],
            check=True,
            capture_output=True,
        )
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([hass, "-c", str(self.config), "--skip-pip"], stdout=log, stderr=log)
        wait_until(lambda: self._status("/api/") == 401, 120, "Home Assistant answering")
        client_id = self.url + "/"
        flow = self._post(
            "/auth/login_flow", {"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id}
        )
        done = self._post(
            f"/auth/login_flow/{flow['flow_id']}",
            {"client_id": client_id, "username": "heatctl", "password": "test-password-1"},
        )
        token = self._post(
            "/auth/token",
            {"grant_type": "authorization_code", "code": done["result"], "client_id": client_id},
            form=True,
        )
        self.token = token["access_token"]
        flow = self.post("/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False})
        entry = self.post(
            f"/api/config/config_entries/flow/{flow['flow_id']}", {"broker": "127.0.0.1", "port": self.broker_port}
        )
        assert entry["type"] == "create_entry", entry

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _status(self, path: str) -> int:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"Home Assistant exited: {self.log.read_text()[-3000:]}") from None
            return 0

    def _post(self, path: str, data: dict[str, Any], *, form: bool = False, auth: bool = False) -> Any:
        import urllib.parse
        import urllib.request

        body = urllib.parse.urlencode(data).encode() if form else json.dumps(data).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded" if form else "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return raw.decode()  # /api/template answers text

    def post(self, path: str, data: dict[str, Any]) -> Any:
        return self._post(path, data, auth=True)

    def record_history(self, events: dict[str, list[tuple[float, str]]]) -> None:
        """Write past states into the recorder's database, as if the sensors had reported them then
        (entities Home Assistant has not seen yet; the recorder runs meanwhile)."""
        import sqlite3

        db = self.config / "home-assistant_v2.db"
        wait_until(db.exists, 60, "the recorder's database")
        with sqlite3.connect(db, timeout=60) as con:
            wait_until(
                lambda: con.execute("SELECT 1 FROM sqlite_master WHERE name = 'states_meta'").fetchone(),
                60,
                "its schema",
            )
            for entity, changes in events.items():
                meta = con.execute("INSERT INTO states_meta (entity_id) VALUES (?)", (entity,)).lastrowid
                con.executemany(
                    "INSERT INTO states (state, last_changed_ts, last_updated_ts, metadata_id, origin_idx)"
                    " VALUES (?, ?, ?, ?, 0)",
                    [(state, at_s, at_s, meta) for at_s, state in changes],
                )

    def get(self, path: str) -> Any:
        import urllib.request

        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def state(self, entity_id: str) -> dict[str, Any] | None:
        import urllib.error

        try:
            result: dict[str, Any] = self.get(f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return result


@pytest.fixture(scope="session")
def homeassistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    """One Home Assistant (and its own Mosquitto) for the session; installs HA once into a cached venv."""
    workdir = tmp_path_factory.mktemp("homeassistant")
    broker = Mosquitto(workdir)
    broker.start()
    ha = HomeAssistant(ensure_homeassistant(), workdir, broker.port)
    try:
        ha.start()
        yield ha
    finally:
        ha.stop()
        broker.stop()


class StandInServer:
    """An OpenAI-compatible stand-in for tests of the queue, not of inference: every chat request is
    answered after ``delay_s``, and each request's first message is counted (how often it ran)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay_s = delay_s
        self.seen: collections.Counter[str] = collections.Counter()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stand_in.lock:
                    stand_in.seen[str(body.get("messages", [{}])[0].get("content"))] += 1
                time.sleep(stand_in.delay_s)  # the request's own running time (the server's side)
                answer = {"choices": [{"message": {"content": "warm"}, "finish_reason": "stop"}]}
                data = json.dumps(answer | {"usage": {"completion_tokens": 3, "prompt_tokens": 5}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client hung up (its slot was taken away)

            def log_message(self, *args: object) -> None:
                return

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.lock = threading.Lock()
        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
