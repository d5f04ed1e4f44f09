"""One exception hierarchy; library errors are translated at the edge."""

from __future__ import annotations

import re


class HeatctlError(Exception):
    """Base class of every error heatctl raises on purpose."""


class ConfigError(HeatctlError):
    """The configuration is invalid; ``problems`` lists every one with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class BackendError(HeatctlError):
    """A GPU or workload backend failed."""


class InstanceConflict(HeatctlError):
    """Another heatctl holds what this one needs (its state_dir, a GPU): exit 2, one line."""


class SinkError(HeatctlError):
    """An output (MQTT, InfluxDB) failed."""


_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>:?\s*")


def plain(exc: BaseException) -> str:
    """An error as a person reads it: the innermost OS-level cause ("connection refused"), never a repr.

    Library errors wrap the useful part several times (requests → urllib3 → socket); this walks
    causes, contexts, ``reason`` attributes and arguments to the innermost ``OSError``.
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    innermost_os: OSError | None = None
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            innermost_os = current
        reason = getattr(current, "reason", None)
        linked = [reason, current.__cause__, current.__context__, *current.args]
        stack += [e for e in linked if isinstance(e, BaseException)]
    if innermost_os is not None and innermost_os.strerror:
        return innermost_os.strerror[:1].lower() + innermost_os.strerror[1:]
    text = _REPR.sub("", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "…"
