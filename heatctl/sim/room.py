"""Grey-box room models (backward Euler: stable for any step)."""

from __future__ import annotations

from typing import Protocol


class Room(Protocol):
    air_c: float

    def step(self, dt_s: float, heat_w: float, outdoor_c: float) -> float: ...

    @property
    def total_r_k_per_w(self) -> float: ...


class Room1R1C:
    """One thermal mass behind one resistance to outdoors."""

    def __init__(self, *, c_j_per_k: float, r_k_per_w: float, initial_c: float) -> None:
        self._c = c_j_per_k
        self._r = r_k_per_w
        self.air_c = initial_c

    @property
    def total_r_k_per_w(self) -> float:
        return self._r

    def step(self, dt_s: float, heat_w: float, outdoor_c: float) -> float:
        a = self._c / dt_s
        self.air_c = (a * self.air_c + outdoor_c / self._r + heat_w) / (a + 1.0 / self._r)
        return self.air_c


class Room2R2C:
    """Ti–Te model: air and furniture (Ci) behind Rie to the envelope (Ce), Rea to outdoors."""

    def __init__(
        self,
        *,
        ci_j_per_k: float,
        ce_j_per_k: float,
        rie_k_per_w: float,
        rea_k_per_w: float,
        initial_c: float,
        initial_envelope_c: float | None = None,
    ) -> None:
        self._ci, self._ce = ci_j_per_k, ce_j_per_k
        self._gie, self._gea = 1.0 / rie_k_per_w, 1.0 / rea_k_per_w
        self._rie, self._rea = rie_k_per_w, rea_k_per_w
        self.air_c = initial_c
        self.envelope_c = initial_c if initial_envelope_c is None else initial_envelope_c

    @property
    def total_r_k_per_w(self) -> float:
        return self._rie + self._rea

    def step(self, dt_s: float, heat_w: float, outdoor_c: float) -> float:
        a, b, g1, g2 = self._ci / dt_s, self._ce / dt_s, self._gie, self._gea
        rhs_i = a * self.air_c + heat_w
        rhs_e = b * self.envelope_c + g2 * outdoor_c
        det = (a + g1) * (b + g1 + g2) - g1 * g1
        self.air_c = (rhs_i * (b + g1 + g2) + g1 * rhs_e) / det
        self.envelope_c = ((a + g1) * rhs_e + g1 * rhs_i) / det
        return self.air_c
