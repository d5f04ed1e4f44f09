"""Loading: YAML with secrets and environment variables, every problem with its path and line."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from heatctl.config.node import Config
from heatctl.config.zone import ZoneConfig
from heatctl.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound="BaseModel")


# --- loading ---------------------------------------------------------------------------


class _Secret:
    """Placeholder for ``!secret NAME``; resolved after loading, with its path."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A key given twice is an error (YAML would keep the last one silently)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is given twice (first on line {seen[key] + 1}): which one is meant?",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor(
    "!secret",
    lambda loader, node: _Secret(str(loader.construct_scalar(node))),  # type: ignore[arg-type]
)


def format_path(path: Path_) -> str:
    """('zones', 0, 'setpoint', 'topic') → 'zones[0].setpoint.topic'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_map(node: yaml.Node | None, path: Path_, lines: dict[Path_, int]) -> None:
    if node is None:
        return
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines[(*path, key.value)] = key.start_mark.line + 1
                _line_map(value, (*path, key.value), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), lines)


class _Resolver:
    """Replaces ``${ENV}`` and ``!secret`` everywhere, collecting problems with paths."""

    def __init__(self, secrets_file: Path | None, env: Mapping[str, str]) -> None:
        self._secrets_file = secrets_file
        self._secrets: dict[str, Any] | None = None
        self._missing_file = False
        self._env = env
        self.problems: list[tuple[Path_, str]] = []

    def resolve(self, value: Any, path: Path_) -> Any:
        if isinstance(value, dict):
            return {k: self.resolve(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, _Secret):
            return self._secret(value.name, path)
        if isinstance(value, str) and "${" in value:
            return _ENV_RE.sub(lambda m: self._env_var(m, path), value)
        return value

    def _env_var(self, match: re.Match[str], path: Path_) -> str:
        name, default = match.group(1), match.group(2)
        if name in self._env:
            return self._env[name]
        if default is not None:
            return default
        self.problems.append((path, f"environment variable {name} is not set"))
        return ""

    def _secret(self, name: str, path: Path_) -> Any:
        if self._secrets is None:
            self._secrets = self._load_secrets(path)
        if self._missing_file:
            return ""  # said once, for the first !secret
        if name not in self._secrets:
            self.problems.append((path, f"secret {name!r} not found in {self._secrets_file}"))
            return ""
        return self._secrets[name]

    def _load_secrets(self, path: Path_) -> dict[str, Any]:
        if self._secrets_file is None or not self._secrets_file.is_file():
            self.problems.append((path, f"!secret used, but there is no {self._secrets_file}"))
            self._missing_file = True
            return {}
        try:
            data = yaml.safe_load(self._secrets_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            self.problems.append((path, f"cannot read {self._secrets_file}: {exc}"))
            return {}
        return data if isinstance(data, dict) else {}


def _cross_references(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """What one part of the file says about another (a zone naming a GPU), each at its own path.

    Runs on the raw data, so these problems are reported together with every other one.
    """
    problems: list[tuple[Path_, str]] = []
    gpus = _list(data.get("gpus"))
    zones = _list(data.get("zones"))
    known = [g.get("id") for g in gpus if isinstance(g, dict)]
    owner: dict[str, str] = {}
    for i, zone in enumerate(zones):
        if not isinstance(zone, dict):
            continue
        name = str(zone.get("name", i))
        for j, gpu_id in enumerate(_list(zone.get("gpus"))):
            if gpu_id not in known:
                hint = _did_you_mean(str(gpu_id), [str(k) for k in known])
                problems.append((("zones", i, "gpus", j), f"unknown gpu {gpu_id!r}{hint}"))
            elif gpu_id in owner:
                problems.append((("zones", i, "gpus", j), f"gpu {gpu_id} is already in zone {owner[gpu_id]}"))
            else:
                owner[str(gpu_id)] = name
        main = zone.get("main_heating")
        if isinstance(main, dict):
            switch: dict[str, Any] = main["switch"] if isinstance(main.get("switch"), dict) else {}
            if (main.get("entity") or switch.get("entity")) and data.get("homeassistant") is None:
                needs = "steers a Home Assistant entity: needs a 'homeassistant:' section"
                problems.append((("zones", i, "main_heating"), needs))
            if (main.get("trv") or main.get("topic") or switch.get("topic")) and data.get("mqtt", {}) is None:
                problems.append((("zones", i, "main_heating"), "steers an MQTT device: needs the 'mqtt:' section"))
        if data.get("homeassistant") is None:
            for field in ZoneConfig.SOURCE_FIELDS:
                source = zone.get(field)
                if isinstance(source, dict) and "entity" in source:
                    needs = "reads a Home Assistant entity: needs a 'homeassistant:' section"
                    problems.append((("zones", i, field, "entity"), needs))
    return problems


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _all_keys(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every key any config model knows, for 'did you mean'."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    keys = set(model.model_fields)
    for field in model.model_fields.values():
        for sub in _models_in(field.annotation):
            keys |= _all_keys(sub, seen)
    return keys


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _models_in(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        yield from _models_in(meta)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        yield from _models_in(origin)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate a config file.

    Raises:
        ConfigError: listing every problem, each as ``file:line: path: message``.
    """
    cfg = load_model(Config, path, env=env)
    for key in ("tariff", "carbon"):  # a CSV series beside the config
        source = getattr(cfg, key)
        csv = getattr(source, "csv", None)
        if isinstance(csv, str) and not Path(csv).is_absolute():
            moved = source.model_copy(update={"csv": str(Path(path).resolve().parent / csv)})
            cfg = cfg.model_copy(update={key: moved})
    return cfg


def parse_config(
    text: str,
    *,
    name: str = "<config>",
    secrets_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate YAML text; see :func:`load_config`."""
    return parse_model(Config, text, name=name, secrets_file=secrets_file, env=env)


def load_model(model: type[M], path: str | Path, *, env: Mapping[str, str] | None = None) -> M:
    """Read a YAML file into ``model``; every problem is reported with file, line and path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    return parse_model(model, text, name=str(path), secrets_file=path.parent / "secrets.yaml", env=env)


def parse_model(
    model: type[M],
    text: str,
    *,
    name: str,
    secrets_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> M:
    """Validate YAML text into ``model``; see :func:`load_model`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        hint = ""
        if "${" in text and "flow mapping" in str(exc):
            hint = ' (inside { } write ${VAR} in quotes: password: "${MQTT_PASSWORD}")'
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        context = getattr(exc, "context", None)
        column = f" (column {mark.column + 1}{', ' + context if context else ''})" if mark is not None else ""
        raise ConfigError([f"{where}: not valid YAML: {what}{column}{hint}"]) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: the top level must be a mapping of keys to values"])
    lines: dict[Path_, int] = {}
    _line_map(node, (), lines)
    resolver = _Resolver(secrets_file, os.environ if env is None else env)
    data = resolver.resolve(data, ())
    problems = list(resolver.problems)
    result: M | None = None
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        keys = _all_keys(model)
        problems += [(_input_path(data, tuple(err["loc"])), _message(err, keys)) for err in exc.errors()]
    if model is Config:
        problems += _cross_references(data)
    if problems:
        raise ConfigError([_problem(name, p, msg, lines) for p, msg in problems])
    assert result is not None
    return result


def _input_path(data: Any, loc: Path_) -> Path_:
    """The error's location in the file: without the tags pydantic inserts for unions (``workload.openai.url``)."""
    path: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        is_tag = (isinstance(part, str) and part.startswith("<") and part.endswith(">")) or (  # a kind's tag
            isinstance(current, dict)
            and part not in current
            and i + 1 < len(loc)
            and (loc[i + 1] in current or isinstance(loc[i + 1], str))
        )
        if is_tag:
            continue
        path.append(part)
        current = current.get(part) if isinstance(current, dict) else _item(current, part)
    return tuple(path)


def _item(current: Any, part: str | int) -> Any:
    if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
        return current[part]
    return None


def _message(err: Any, keys: set[str]) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + _did_you_mean(str(err["loc"][-1]), keys)
    return msg[:1].lower() + msg[1:]


def _problem(name: str, path: Path_, msg: str, lines: dict[Path_, int]) -> str:
    line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)
    where = f"{name}:{line}" if line else name
    return f"{where}: {format_path(path)}: {msg}"
