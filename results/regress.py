"""Nightly regression verdicts: two sets of measurements compared metric by metric, per candidate.

Samples are the stored measurements of a candidate (matched by name and target) in the baseline and
in the candidate runs; repeated runs, or ``measure --repeat N``, give several per metric.
Deterministic metrics (Flash bytes, Vela's cycle estimates, instruction counts) compare exactly: any
change beyond their threshold (0 unless configured) counts.
The others, as LLVM's LNT does, need both a change beyond their threshold and a test that rejects
"no change" at ``alpha``:

- accuracy, where both sides kept their per-sample predictions on the same test images: McNemar's exact
  test on the discordant pairs (``results.paired``), so one run a side suffices; identical predictions
  need no test;
- latency on a device that times windows (a board, an MLPerf Tiny device): Mann-Whitney U over the
  timed windows of each side;
- otherwise Mann-Whitney U over the measurements; with fewer than ``MIN_SAMPLES`` per side the test
  cannot reject, and the threshold alone decides (said in the table).

Only comparable measurements are compared: different targets, target settings or evaluations (test
images, their count or selection, the int8 calibration) are refused, the last unless
``allow_different_evaluation``. Each verdict names the commits between the two sides.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from core.errors import UsageError
from results.paired import evaluation_difference, paired_accuracy

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
    commits: str = "—"  # baseline..candidate git commits

    def row(self) -> list[str]:
        p_value = "—" if self.p_value is None else f"{self.p_value:.3g}"
        return [self.candidate, self.target, self.metric, self.verdict, f"{self.baseline:.6g}", f"{self.latest:.6g}",
                _change_text(self.metric, self.change), p_value, f"{self.samples[0]}/{self.samples[1]}", self.how,
                self.commits]


def _change_text(metric: str, change: float) -> str:
    return f"{100 * change:+.2f} pts" if METRICS[metric][3] == "absolute" else f"{100 * change:+.2f}%"


def samples_from_rows(rows: list[dict]) -> dict:
    """{(candidate name, target): {"metrics": {metric: [values]}, "tool_versions", "target_settings",
    "evaluations": [each distinct evaluation], "predictions": [each row's], "windowed": bool, "git_sha"}}
    from stored measurement rows (failed rows are skipped). A row with timed windows
    (``latency_windows_s``) gives each window's latency as a sample."""
    grouped: dict[tuple[str, str], dict] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        entry = grouped.setdefault((row["candidate_name"], row["target"]), {
            "metrics": {}, "tool_versions": row.get("tool_versions") or {},
            "target_settings": row.get("target_settings") or {}, "evaluations": [], "predictions": [],
            "windowed": False, "git_sha": None})
        extra = row.get("extra") or {}
        evaluation = row.get("evaluation", extra.get("evaluation"))
        if evaluation not in entry["evaluations"]:
            entry["evaluations"].append(evaluation)
        predictions = row.get("predictions", extra.get("predictions"))
        if predictions:
            entry["predictions"].append(predictions)
        entry["git_sha"] = row.get("git_sha") or entry["git_sha"]
        for metric in METRICS:
            windows = extra.get("latency_windows_s") if metric == "latency_s" else None
            if windows:
                entry["windowed"] = True
                entry["metrics"].setdefault(metric, []).extend(float(value) for value in windows)
                continue
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
    return {(e["candidate"], e["target"]): {**{k: e[k] for k in ("metrics", "tool_versions", "target_settings")},
                                            **{k: e[k] for k in OPTIONAL_KEYS if k in e}}
            for e in data["entries"]}


OPTIONAL_KEYS = ("evaluations", "predictions", "windowed", "git_sha")  # absent from older baseline files


def compare(baseline: dict, latest: dict, thresholds: dict[str, float] | None = None,
            alpha: float = DEFAULT_ALPHA, allow_different_evaluation: bool = False) -> tuple[list[Verdict], list[str]]:
    """Verdicts for every (candidate, target, metric) present on both sides, and warnings (tool versions
    that differ). Raises UsageError when the two sides share no candidate on the same target, when they
    measured on different targets or settings (apples and oranges), or evaluated on different test
    images or calibrations (unless ``allow_different_evaluation``: then a warning)."""
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
        difference = _evaluation_difference(before, after)
        if difference and not allow_different_evaluation:
            raise UsageError(f"{key[0]} on {key[1]}: the evaluations differ ({difference}); compare runs evaluated on "
                             "the same test images, or pass --allow-different-evaluation")
        if difference:
            warnings.append(f"{key[0]} on {key[1]}: the evaluations differ ({difference}); compared anyway")
        commits = f"{(before.get('git_sha') or '?')[:10]}..{(after.get('git_sha') or '?')[:10]}"
        for metric in METRICS:
            a, b = before["metrics"].get(metric), after["metrics"].get(metric)
            if a and b:
                verdict = _paired_verdict(key, a, b, before, after, thresholds[metric], alpha) \
                    if metric == "accuracy_int8" and not difference else None
                verdict = verdict or _verdict(key, metric, a, b, thresholds[metric], alpha,
                                              before.get("windowed") and after.get("windowed"))
                verdict.commits = commits
                verdicts.append(verdict)
    return verdicts, warnings


def _evaluation_difference(before: dict, after: dict) -> str | None:
    """What differs in the evaluations of two sides (or among the runs of one side), in words."""
    for side, entry in (("baseline", before), ("candidate", after)):
        known = [evaluation for evaluation in entry.get("evaluations") or [] if evaluation]
        for other in known[1:]:
            difference = evaluation_difference(known[0], other)
            if difference:
                return f"among the {side}'s runs: {difference}"
    first = [e for e in before.get("evaluations") or [] if e]
    second = [e for e in after.get("evaluations") or [] if e]
    return evaluation_difference(first[0], second[0]) if first and second else None


def _paired_verdict(key, before_values: list[float], after_values: list[float], before: dict, after: dict,
                    threshold: float, alpha: float) -> Verdict | None:
    """Accuracy judged on the last measurement of each side, pair by pair (McNemar); None without
    predictions on both sides."""
    if not before.get("predictions") or not after.get("predictions"):
        return None
    paired = paired_accuracy(before["predictions"][-1], after["predictions"][-1])
    if paired is None:
        return None
    base, late = before_values[-1], after_values[-1]
    samples = (len(before_values), len(after_values))
    if paired.identical:
        return Verdict(key[0], key[1], "accuracy_int8", "UNCHANGED", base, late, late - base, None, samples,
                       f"identical predictions on {paired.samples} images")
    moved = abs(late - base) > threshold and paired.p_value < alpha
    verdict = "UNCHANGED" if not moved else ("REGRESSED" if late < base else "IMPROVED")
    return Verdict(key[0], key[1], "accuracy_int8", verdict, base, late, late - base, paired.p_value, samples,
                   f"McNemar exact on {paired.samples} paired images ({paired.worse} worse, {paired.better} better), "
                   f"alpha {alpha:g}")


def _verdict(key, metric: str, before: list[float], after: list[float], threshold: float, alpha: float,
             windowed: bool = False) -> Verdict:
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
        moved = abs(change) > threshold and p_value < alpha
        how = f"Mann-Whitney U{' over timed windows' if windowed else ''}, alpha {alpha:g}"
    verdict = "UNCHANGED" if not moved else ("REGRESSED" if worse else "IMPROVED")
    return Verdict(key[0], key[1], metric, verdict, base, late, change, p_value, (len(before), len(after)), how)


HEADERS = ["candidate", "target", "metric", "verdict", "baseline", "latest", "change", "p", "samples", "test", "commits"]


def junit_xml(verdicts: list[Verdict], path: Path) -> Path:
    """One testcase per (candidate, target, metric); a REGRESSED one carries a failure."""
    suite = ElementTree.Element("testsuite", name="udc-harness-regress", tests=str(len(verdicts)),
                                failures=str(sum(v.verdict == "REGRESSED" for v in verdicts)))
    for verdict in verdicts:
        case = ElementTree.SubElement(suite, "testcase", classname=f"{verdict.target}.{verdict.candidate}",
                                      name=verdict.metric)
        message = (f"{verdict.metric} {verdict.verdict}: {verdict.baseline:.6g} -> {verdict.latest:.6g} "
                   f"({_change_text(verdict.metric, verdict.change)}; {verdict.how}; commits {verdict.commits})")
        if verdict.verdict == "REGRESSED":
            ElementTree.SubElement(case, "failure", message=message, type="regression").text = message
        else:
            ElementTree.SubElement(case, "system-out").text = message
    path.parent.mkdir(parents=True, exist_ok=True)
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path
