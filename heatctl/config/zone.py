"""A zone: a room, its sources, its loop, its GPUs and its main heating."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from heatctl.config.base import _NODE_ID_RE, _Strict
from heatctl.config.control import ControlConfig
from heatctl.config.planner import ScheduleEntryConfig
from heatctl.config.sources import SourceConfig
from heatctl.mainheat.kinds import MainHeatingConfig, main_kind

WINDOW_STALE_S = 7200.0  # a window contact's default stale_after_s


class ZoneConfig(_Strict):
    name: Annotated[str, Field(pattern=_NODE_ID_RE)]
    temperature: SourceConfig
    setpoint: SourceConfig
    mode: SourceConfig | None = None  # thermostat's own mode (e.g. system_mode): off → no heat
    window: SourceConfig | None = None
    outdoor_temperature: SourceConfig | None = None
    power_meter: SourceConfig | None = None  # wall-plug meter: true heat output
    control: ControlConfig = ControlConfig()
    gpus: list[str] = Field(min_length=1)
    main_heating: MainHeatingConfig | None = None
    # Named targets for the zone's climate entity (HA presets); ``boost`` is always there.
    presets: dict[Literal["comfort", "eco", "away"], Annotated[float, Field(ge=5, le=30)]] = {}
    schedule: list[ScheduleEntryConfig] | None = None  # for the planner; else learned from the setpoint history

    SOURCE_FIELDS: ClassVar[tuple[str, ...]] = (
        "temperature",
        "setpoint",
        "mode",
        "window",
        "outdoor_temperature",
        "power_meter",
        "main_setpoint",
    )

    @model_validator(mode="before")
    @classmethod
    def _contact_staleness(cls, data: Any) -> Any:
        # A window contact reports on change and on its hourly check-in, not every few minutes.
        window = data.get("window") if isinstance(data, dict) else None
        if isinstance(window, dict) and "stale_after_s" not in window:
            data = {**data, "window": {**window, "stale_after_s": WINDOW_STALE_S}}
        return data

    @property
    def main_setpoint(self) -> SourceConfig | None:
        """The main heating's own setpoint as it reports it (derived from ``main_heating``)."""
        main = self.main_heating
        return main_kind(main).readback(main) if main is not None else None

    def sources(self) -> Iterator[tuple[str, SourceConfig]]:
        """(field name, source) for every source this zone configures."""
        for name in self.SOURCE_FIELDS:
            source = getattr(self, name)
            if source is not None:
                yield name, source
