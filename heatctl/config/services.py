"""The services heatctl talks to: MQTT, InfluxDB, Home Assistant, and the Batch API it serves."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from heatctl.config.base import _Strict, duration_s
from heatctl.config.sources import SourceConfig


class TlsConfig(_Strict):
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False


class MqttConfig(_Strict):
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls: bool | TlsConfig = False
    client_id: str | None = None
    keepalive_s: Annotated[int, Field(ge=5)] = 60
    base_topic: str = "heatctl"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"


class InfluxConfig(_Strict):
    url: str
    token: SecretStr | None = None
    org: str = ""
    bucket: str = "heatctl"
    verify_ssl: bool = True
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    write_interval_s: Annotated[float, Field(gt=0)] | None = None  # default: the control interval
    tags: dict[str, str] = {}
    buffer_points: Annotated[int, Field(ge=100)] = 20_000
    spool: str | None = None  # file that keeps unsent points across restarts


class HomeAssistantConfig(_Strict):
    url: str
    token: SecretStr
    poll_interval_s: Annotated[float, Field(gt=0)] = 30.0
    verify_ssl: bool = True


MIN_TOKEN_CHARS = 16


class BatchApiConfig(_Strict):
    """An OpenAI-compatible Batch API: work from anyone in the house, run when heat is wanted."""

    listen: str = "127.0.0.1:8090"
    token: SecretStr
    max_file_mb: Annotated[float, Field(gt=0, le=2048)] = 200.0
    max_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 50_000  # per batch
    completion_windows: list[str] = Field(default=["24h"], min_length=1)
    passthrough: bool = True  # /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models proxied
    passthrough_when_off: bool = False  # passthrough also while heatctl is off or in fail-safe (its heat unwanted)
    max_connections: Annotated[int, Field(ge=4, le=10_000)] = 256  # open at once; the next is answered 503

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().strip()) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the token must be at least {MIN_TOKEN_CHARS} characters (make one: openssl rand -hex 16)"
            )
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8090)")
        return value

    @field_validator("completion_windows")
    @classmethod
    def _windows(cls, windows: list[str]) -> list[str]:
        for window in windows:
            duration_s(window)
        return windows

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


_NATS_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # stream, subject and bucket names derive from it


class FleetConfig(_Strict):
    """The fleet hub this house's nats-server is a leaf node of: the hub's pool of work, pulled while
    this node's room wants heat and the house's own pool has nothing for it."""

    name: Annotated[str, Field(pattern=_NATS_NAME)] = "fleet"  # the hub's pool (its heatctl's house name)
    domain: Annotated[str, Field(pattern=_NATS_NAME)] = "hub"  # the hub's JetStream domain


class HouseConfig(_Strict):
    """Several heaters in one house: one power budget shared on NATS JetStream (a key-value bucket),
    and with a Batch API one pool of work (a work-queue stream)."""

    nats: str = "nats://127.0.0.1:4222"  # the house's nats-server (run with -js)
    name: Annotated[str, Field(pattern=_NATS_NAME)] = "home"
    budget_w: Annotated[float, Field(gt=0)]  # all the house's heaters together (a fuse, a contract)
    nodes: Annotated[int, Field(ge=1, le=1000)] = 2  # how many share it: each one's share before it sees the others
    publish_every_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    stale_after_s: Annotated[float, Field(gt=0)] = 30.0  # a peer silent this long counts at its full capacity
    ack_wait_s: Annotated[float, Field(ge=1, le=3600)] = 60.0  # a pulled request not acked by then runs elsewhere
    fleet: FleetConfig | None = None
    # The house's meter (W, import > 0, export < 0; an MQTT topic): solar export the heaters may add.
    grid_power: SourceConfig | None = None
