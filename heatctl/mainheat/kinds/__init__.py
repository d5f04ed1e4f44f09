"""Main-heating kinds by name, as GPU backends and workloads are: each module holds its config model
and how a value reaches the device. A new kind is one module and one line in ``MAIN_KINDS``.

The config's ``main_heating`` is told apart by which kind's key it has (``trv:``, ``entity:``,
``topic:``, ``switch:``), so the YAML names the device and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final, Union

from pydantic import Discriminator, Tag

from heatctl.config.mainheat import MainHeatingBase
from heatctl.mainheat.kinds import entity, switch, topic, trv
from heatctl.mainheat.kinds.base import MainKind, MqttMessage, ServiceCall, Value
from heatctl.mainheat.kinds.entity import EntityMainHeating
from heatctl.mainheat.kinds.switch import SwitchMainHeating
from heatctl.mainheat.kinds.topic import TopicMainHeating
from heatctl.mainheat.kinds.trv import TrvMainHeating

MAIN_KINDS: Final[dict[str, MainKind]] = {k.name: k for k in (trv.KIND, entity.KIND, topic.KIND, switch.KIND)}


def _kind_of(value: Any) -> str | None:
    """The kind whose key the config names (exactly one), for the discriminated union."""
    if not isinstance(value, dict):
        kind = getattr(value, "kind", None)
        return _tag(kind) if kind else None
    named = [name for name in MAIN_KINDS if name in value]
    return _tag(named[0]) if len(named) == 1 else None


def _tag(kind: str) -> str:
    """The union's tag for a kind: never a key of the YAML (the loader leaves it out of error paths)."""
    return f"<{kind}>"


if TYPE_CHECKING:
    MainHeatingConfig = MainHeatingBase
else:  # the union of every registered kind's model, told apart by its key
    MainHeatingConfig = Annotated[
        Union[tuple(Annotated[k.model, Tag(_tag(k.name))] for k in MAIN_KINDS.values())],  # noqa: UP007
        Discriminator(
            _kind_of,
            custom_error_type="main_heating_kind",
            custom_error_message="give exactly one of " + ", ".join(f"'{k}'" for k in MAIN_KINDS),
        ),
    ]


def main_kind(cfg: MainHeatingBase) -> MainKind:
    """The kind of a zone's main heating."""
    return MAIN_KINDS[cfg.kind]


__all__ = [
    "MAIN_KINDS",
    "EntityMainHeating",
    "MainHeatingBase",
    "MainHeatingConfig",
    "MainKind",
    "MqttMessage",
    "ServiceCall",
    "SwitchMainHeating",
    "TopicMainHeating",
    "TrvMainHeating",
    "Value",
    "main_kind",
]
