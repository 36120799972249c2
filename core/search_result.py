"""``SearchResult``: what a search records about the candidate it emits, typed, in one place.

A search writes it into the candidate spec's ``meta`` (``to_meta``: the same keys the spec has always
carried, so stored specs and rows read back unchanged); the harness copies it into each measured row's
``extra["search"]``, and reports and tables read it back with ``from_meta``. The spec's ``meta`` is not
part of the candidate's content hash, so these figures never change a candidate's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

SPEC_ONLY = ("pi", "search_history")


@dataclass
class SearchResult:
    budgets: dict[str, float] | None = None  # every budget, kind -> limit (core.budgets)
    seed: int | None = None  # the seed of the run that made the candidate
    budget_bytes: float | None = None  # the size budget e* (bytes of compressed weights), or None
    budget_macs: int | None = None  # the MAC budget, or None
    budget_flash_bytes: float | None = None  # the Flash budget the search's penalty constrains, or None
    constraint_met: bool | None = None  # the emitted configuration meets the searched budget as predicted
    constraint_met_measured: bool | None = None  # the compiled candidate meets every budget as measured
    measured: dict[str, float] | None = None  # the compiled candidate's figure per budgeted kind
    measured_before_moves: dict[str, float] | None = None  # the same before any measured move
    measured_moves: list[str] | None = None  # decisions moved cheaper because a measured figure was over
    flash_bytes_predicted: float | None = None  # the Flash model's prediction for the emitted candidate
    flash_bytes_gamma_pi: float | None = None  # the same for gamma(pi) before repair
    flash_model: dict[str, Any] | None = None  # the calibrated Flash model (core.flash_model) the search used
    constraint_met_argmax: bool | None = None  # gamma(pi), the argmax configuration after search, met it
    repair_moves: list[str] | None = None  # decisions moved one option cheaper to meet the budget
    size_bits: float | None = None  # size bound of the emitted configuration (bits)
    macs: float | None = None  # MACs of the emitted configuration, under a MAC budget
    size_bits_gamma_pi: float | None = None  # size bound of gamma(pi) before repair
    macs_gamma_pi: float | None = None
    decisions: dict[str, dict] | None = None  # layer -> {bits, nonzero, width, op}
    weight_norm: dict[str, Any] | None = None  # ||theta||^2 before finetuning, after it with Q-hat and plain Q
    timings_s: dict[str, float] | None = None  # search_s, finetune_s, ...
    ablation: dict[str, Any] | None = None  # the Table 3 row and its components, for ablation runs
    lambda_sweep: list | None = None  # (lambda, size, met, validation accuracy) per lambda of a sweep
    processes: int | None = None  # processes the Monte-Carlo samples were spread over
    random: dict[str, Any] | None = None  # random search: trials, steps per trial, the best trial
    bops: float | None = None  # Zur et al.: bit operations of the emitted configuration
    latency_table_cycles: float | None = None  # UNAS: the full network's latency from its cycle table
    latency_target_cycles: float | None = None  # UNAS: the latency target t
    neuralscale_fit: dict[str, Any] | None = None  # NeuralScale: the fitted power laws
    pi: dict[str, list[float]] | None = None  # the learned distribution of every decision (spec only)
    search_history: list | None = None  # the search's losses and costs over its steps (spec only)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys of the spec's meta that are not figures

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "extra")

    @classmethod
    def row_keys(cls) -> tuple[str, ...]:
        """The figures kept with each measured row (``extra["search"]``); the per-decision distributions and
        the per-step history stay in the spec."""
        return tuple(key for key in cls.keys() if key not in SPEC_ONLY)

    @classmethod
    def from_meta(cls, meta: dict | None) -> "SearchResult":
        """The search figures of a spec's ``meta`` (or a row's ``extra["search"]``); other keys in ``extra``."""
        meta = meta or {}
        known = cls.keys()
        return cls(**{key: meta[key] for key in known if key in meta},
                   extra={key: value for key, value in meta.items() if key not in known})

    def to_meta(self) -> dict:
        """The figures that are set, under their names (what a spec's ``meta`` and a row's ``search`` hold)."""
        return {key: getattr(self, key) for key in self.keys() if getattr(self, key) is not None}

    def met(self) -> bool:
        """The verdict: measured where the compiled candidate was measured, else predicted."""
        return bool(self.constraint_met if self.constraint_met_measured is None else self.constraint_met_measured)

    def budget_line(self) -> str:
        """Each budget with the candidate's figure (measured where measured, else predicted) and the verdict,
        e.g. ``38,512 B Flash measured of 38,912 B Flash, constraint met after 1 move(s)``."""
        from core.budgets import describe

        measured = self.measured or {}
        predicted = {"size_bound": None if self.size_bits is None else self.size_bits / 8, "macs": self.macs,
                     "flash": self.flash_bytes_predicted}
        parts = []
        for kind, limit in (self.budgets or {}).items():
            value = measured.get(kind, predicted.get(kind))
            source = ("predicted" if kind not in measured else
                      "measured" if kind in ("flash", "npu_cycles", "sram") else "counted")
            parts.append(f"{describe(kind, value)} {source} of {describe(kind, limit)}" if value is not None
                         else f"budget {describe(kind, limit)}")
        moves = (self.repair_moves or []) + (self.measured_moves or [])
        return (", ".join(parts) + f", constraint {'met' if self.met() else 'NOT MET'}"
                + (f" after {len(moves)} move(s)" if moves else ""))
