"""Nightly regression verdicts: two sets of measurements compared metric by metric, per candidate.

Samples are the stored measurements of a candidate (matched by name and target) in the baseline and
in the candidate runs; repeated runs, or ``measure --repeat N``, give several per metric.
Deterministic metrics (Flash bytes, Vela's cycle estimates, instruction counts) compare exactly: any
change beyond their threshold (0 unless configured) counts.
The others, as LLVM's LNT does, need both a change beyond their threshold and a Mann-Whitney U test
that rejects "same distribution" at ``alpha``; with fewer than ``MIN_SAMPLES`` per side the test
cannot reject, and the threshold alone decides (said in the table).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from core.errors import UsageError

MIN_SAMPLES = 3
BASELINE_FORMAT = "udc-regress-baseline/1"
# metric -> (deterministic, lower is better, default threshold, threshold kind)
METRICS: dict[str, tuple[bool, bool, float, str]] = {
    "flash_bytes": (True, True, 0.0, "relative"),
    "sram_bytes": (True, True, 0.0, "relative"),
    "npu_cycles": (True, True, 0.0, "relative"),
    "total_cycles": (True, True, 0.0, "relative"),
    "instructions": (True, True, 0.0, "relative"),
    "latency_s": (False, True, 0.02, "relative"),
    "accuracy_int8": (False, False, 0.005, "absolute"),
}
DEFAULT_ALPHA = 0.05
VERDICTS = ("REGRESSED", "IMPROVED", "UNCHANGED")


@dataclass
class Verdict:
    candidate: str
    target: str
    metric: str
    verdict: str
    baseline: float
    latest: float
    change: float
    p_value: float | None
    samples: tuple[int, int]
    how: str

    def row(self) -> list[str]:
        p_value = "—" if self.p_value is None else f"{self.p_value:.3g}"
        return [self.candidate, self.target, self.metric, self.verdict, f"{self.baseline:.6g}", f"{self.latest:.6g}",
                _change_text(self.metric, self.change), p_value, f"{self.samples[0]}/{self.samples[1]}", self.how]


def _change_text(metric: str, change: float) -> str:
    return f"{100 * change:+.2f} pts" if METRICS[metric][3] == "absolute" else f"{100 * change:+.2f}%"


def samples_from_rows(rows: list[dict]) -> dict:
    """{(candidate name, target): {"metrics": {metric: [values]}, "tool_versions": ..., "target_settings": ...}}
    from stored measurement rows (failed rows are skipped)."""
    grouped: dict[tuple[str, str], dict] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        entry = grouped.setdefault((row["candidate_name"], row["target"]), {
            "metrics": {}, "tool_versions": row.get("tool_versions") or {},
            "target_settings": row.get("target_settings") or {}})
        extra = row.get("extra") or {}
        for metric in METRICS:
            value = row.get(metric, extra.get(metric))
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                entry["metrics"].setdefault(metric, []).append(float(value))
    return grouped


def write_baseline(samples: dict, path: Path) -> Path:
    entries = [{"candidate": name, "target": target, **entry} for (name, target), entry in sorted(samples.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": BASELINE_FORMAT, "entries": entries}, indent=1, sort_keys=True) + "\n")
    return path


def read_baseline(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: not a readable baseline file ({error}); write one with "
                         "'python -m harness regress --candidate RUN --update-baseline FILE'") from None
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found != BASELINE_FORMAT:
        raise UsageError(f"{path}: format {found!r} is not {BASELINE_FORMAT}; write a new baseline with "
                         "--update-baseline")
    return {(e["candidate"], e["target"]): {k: e[k] for k in ("metrics", "tool_versions", "target_settings")}
            for e in data["entries"]}


def compare(baseline: dict, latest: dict, thresholds: dict[str, float] | None = None,
            alpha: float = DEFAULT_ALPHA) -> tuple[list[Verdict], list[str]]:
    """Verdicts for every (candidate, target, metric) present on both sides, and warnings (tool versions
    that differ). Raises UsageError when the two sides share no candidate on the same target, or when
    they measured on different targets (apples and oranges)."""
    thresholds = {**{m: spec[2] for m, spec in METRICS.items()}, **(thresholds or {})}
    unknown = sorted(set(thresholds) - set(METRICS))
    if unknown:
        raise UsageError(f"unknown regress metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    common = sorted(set(baseline) & set(latest))
    if not common:
        targets = sorted({t for _, t in baseline}), sorted({t for _, t in latest})
        if targets[0] != targets[1]:
            raise UsageError(f"the baseline was measured on {', '.join(targets[0]) or 'nothing'} and the candidate run "
                             f"on {', '.join(targets[1]) or 'nothing'}; compare runs on the same target")
        raise UsageError("the baseline and the candidate run share no candidate; compare runs of the same job")
    warnings = []
    verdicts = []
    for key in common:
        before, after = baseline[key], latest[key]
        changed = {tool: (before["tool_versions"].get(tool), version) for tool, version in after["tool_versions"].items()
                   if before["tool_versions"].get(tool) not in (None, version)}
        if changed:
            warnings.append(f"{key[0]} on {key[1]}: tool versions differ ("
                            + ", ".join(f"{t} {a} -> {b}" for t, (a, b) in sorted(changed.items()))
                            + "); a change may come from the tools")
        if before["target_settings"] != after["target_settings"]:
            raise UsageError(f"{key[0]} on {key[1]}: target settings differ ({before['target_settings']} vs "
                             f"{after['target_settings']}); compare runs with the same settings")
        for metric in METRICS:
            a, b = before["metrics"].get(metric), after["metrics"].get(metric)
            if a and b:
                verdicts.append(_verdict(key, metric, a, b, thresholds[metric], alpha))
    return verdicts, warnings


def _verdict(key, metric: str, before: list[float], after: list[float], threshold: float, alpha: float) -> Verdict:
    deterministic, lower_is_better, _, kind = METRICS[metric]
    base, late = statistics.median(before), statistics.median(after)
    change = (late - base) if kind == "absolute" else ((late - base) / base if base else (0.0 if late == base else math.inf))
    worse = change > 0 if lower_is_better else change < 0
    p_value, how = None, "exact"
    if deterministic:
        moved = abs(change) > threshold
    elif min(len(before), len(after)) < MIN_SAMPLES:
        moved, how = abs(change) > threshold, f"threshold only (< {MIN_SAMPLES} samples)"
    else:
        from scipy.stats import mannwhitneyu

        p_value = float(mannwhitneyu(before, after, alternative="two-sided").pvalue) \
            if sorted(before) != sorted(after) else 1.0
        moved, how = abs(change) > threshold and p_value < alpha, f"Mann-Whitney U, alpha {alpha:g}"
    verdict = "UNCHANGED" if not moved else ("REGRESSED" if worse else "IMPROVED")
    return Verdict(key[0], key[1], metric, verdict, base, late, change, p_value, (len(before), len(after)), how)


HEADERS = ["candidate", "target", "metric", "verdict", "baseline", "latest", "change", "p", "samples", "test"]


def junit_xml(verdicts: list[Verdict], path: Path) -> Path:
    """One testcase per (candidate, target, metric); a REGRESSED one carries a failure."""
    suite = ElementTree.Element("testsuite", name="udc-harness-regress", tests=str(len(verdicts)),
                                failures=str(sum(v.verdict == "REGRESSED" for v in verdicts)))
    for verdict in verdicts:
        case = ElementTree.SubElement(suite, "testcase", classname=f"{verdict.target}.{verdict.candidate}",
                                      name=verdict.metric)
        message = (f"{verdict.metric} {verdict.verdict}: {verdict.baseline:.6g} -> {verdict.latest:.6g} "
                   f"({_change_text(verdict.metric, verdict.change)}; {verdict.how})")
        if verdict.verdict == "REGRESSED":
            ElementTree.SubElement(case, "failure", message=message, type="regression").text = message
        else:
            ElementTree.SubElement(case, "system-out").text = message
    path.parent.mkdir(parents=True, exist_ok=True)
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path
