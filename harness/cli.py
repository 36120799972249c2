"""``python -m harness``: run, search, measure, report, tables, doctor.

Errors are one line naming the problem and the fix; exit 2 for usage errors, 1 for failed runs;
tracebacks only under ``--debug`` (DESIGN.md section 5).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from harness.errors import HarnessError, UsageError
from search.strategy import SEARCH_STRATEGIES
from targets.corstone300 import MACS

JSON_KEYS = ("candidate", "candidate_hash", "target", "status", "error", "cached", "flash_bytes", "sram_bytes",
             "encoded_weight_bytes", "original_weight_bytes", "npu_cycles", "total_cycles", "latency_s",
             "latency_is_estimate", "rhs_bound_bytes", "empirical_entropy_bytes", "coded_mask_bytes",
             "accuracy_int8", "accuracy_float", "accuracy_samples", "tflm_arena_bytes", "instructions", "bit_exact",
             "flash_breakdown", "target_settings", "tool_versions", "git_sha", "host")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors become our one-line usage errors
        raise UsageError(f"{message} (see: python -m harness {self.prog.split()[-1]} --help)")


def _common(parser: argparse.ArgumentParser, store: bool = True) -> None:
    parser.add_argument("--out", type=Path, help="output directory for artifacts, store and reports (default: ./harness-out)")
    if store:
        parser.add_argument("--store", help="store URL (default: sqlite file in the output directory; postgresql://... for a shared store)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-candidate lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="where to measure (default: vela); see 'doctor'")
    parser.add_argument("--accelerator", help="Ethos-U55 MAC config: ethos-u55-32|64|128|256 (default: ethos-u55-128)")
    parser.add_argument("--system-config", help="Vela system config (default: Ethos_U55_High_End_Embedded)")
    parser.add_argument("--memory-mode", help="Vela memory mode (default: Shared_Sram)")
    parser.add_argument("--allow-cpu-ops", action="store_true", default=None,
                        help="measure models with operators Vela leaves on the CPU instead of failing them")
    parser.add_argument("--macs", type=int, choices=MACS,
                        help="Ethos-U55 MACs per cycle: --accelerator ethos-u55-N (corstone300: -C ethosu.num_macs)")
    parser.add_argument("--port", help="board target: its serial port, e.g. /dev/ttyACM0 (config: [board] port)")
    parser.add_argument("--probe", help="board target: pyOCD probe id (default: the only one attached)")
    parser.add_argument("--config", type=Path, help="TOML config (sections run, search, measure, vela, firmware, board)")


def _target_overrides(args) -> dict:
    """The config sections the target options on the command line override."""
    if args.macs and args.accelerator and args.accelerator != f"ethos-u55-{args.macs}":
        raise UsageError(f"--macs {args.macs} contradicts --accelerator {args.accelerator}; give one of them")
    accelerator = f"ethos-u55-{args.macs}" if args.macs else args.accelerator
    return {"vela": {"accelerator": accelerator, "system_config": args.system_config, "memory_mode": args.memory_mode},
            "board": {"port": args.port, "probe": args.probe}}


def _training_options(parser: argparse.ArgumentParser, full_help: str) -> None:
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", dest="preset", action="store_const", const="quick", help="minutes on 2 cores (default)")
    preset.add_argument("--full", dest="preset", action="store_const", const="full", help=full_help)
    parser.add_argument("--dataset", help="fashion-mnist (default), cifar10, cifar100, synthetic")
    parser.add_argument("--data-path", help="dataset directory (CIFAR: the extracted python-pickle folder)")
    parser.add_argument("--supernet", help="mbv2 (default) or resnet")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="UDC search and hardware-in-the-loop measurement for Arm Ethos-U55.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="train, compress, measure every candidate, write a report")
    _common(run)
    _target_options(run)
    _training_options(run, full_help="full training and test set")
    run.add_argument("--eval-samples", type=int, help="test images for int8 accuracy (0 = all)")
    run.add_argument("--force", action="store_true", help="re-measure candidates already in the store")
    run.add_argument("--budgets", help="compressed-size budgets for the searches, comma-separated (default: 24KB)")
    run.add_argument("--strategies", help="comma-separated subset of uniform,udc,dnas,random,zur,unas,neuralscale "
                                          "(default: uniform,udc,random)")
    run.add_argument("--ablation", choices=["table3"], help="also run the rows of the UDC paper's Table 3 at each budget")

    search = commands.add_parser("search", help="search a configuration under a budget, finetune it, write candidates")
    _common(search, store=False)
    search.add_argument("--config", type=Path, help="TOML config; its [udc] section holds the search settings")
    budget = search.add_mutually_exclusive_group()
    budget.add_argument("--budget", help="compressed-size budget e* (bytes, or with a unit: 24KB, 0.5MB, 20KiB)")
    budget.add_argument("--mac-budget", type=int, metavar="N",
                        help="MAC budget instead of a size budget (multiply-accumulates per inference)")
    # --macs names the NPU's MACs per cycle on run and measure; on search it only says where the MAC budget went.
    search.add_argument("--macs", dest="macs_on_search", help=argparse.SUPPRESS)
    search.add_argument("--strategy", choices=SEARCH_STRATEGIES, default="udc",
                        help="udc (default), dnas (vanilla DNAS, eq. 6), random (random search), or a seed peer: "
                             "zur (Zur et al.), unas (UNAS), neuralscale (NeuralScale)")
    _training_options(search, full_help="the long schedule")
    search.add_argument("--processes", type=int, default=1,
                        help="spread the MC samples over this many processes (torch.distributed, gloo)")

    measure = commands.add_parser("measure", help="measure candidates or .tflite files on a target")
    _common(measure)
    _target_options(measure)
    measure.add_argument("--candidate", type=Path, action="append", default=[], help="candidate directory (repeatable)")
    measure.add_argument("--tflite", type=Path, action="append", default=[], help="int8 .tflite file (repeatable)")
    measure.add_argument("--dataset", help="dataset for accuracy (default: the candidate's own; none for .tflite)")
    measure.add_argument("--data-path", help="dataset directory")
    measure.add_argument("--eval-samples", type=int, default=0, help="test images for accuracy (0 = all, the default)")
    measure.add_argument("--json", action="store_true", help="print one JSON object per model on stdout")
    measure.add_argument("--force", action="store_true", help="re-measure even when the store has this measurement")
    measure.add_argument("--repeat", type=int, default=1,
                         help="measure each model N times (samples for 'regress'; repeats always re-measure)")

    regress = commands.add_parser("regress", help="compare runs metric by metric; exit 1 on any regression")
    _common(regress)
    regress.add_argument("--baseline", help="run id(s), e.g. 12 or 12,13,14, or a baseline file from --update-baseline")
    regress.add_argument("--candidate", help="run id(s) to judge (default: the latest run)")
    regress.add_argument("--junit", type=Path, help="also write the verdicts as JUnit XML")
    regress.add_argument("--update-baseline", type=Path, metavar="FILE",
                         help="write the candidate runs' samples to FILE as the new baseline (no comparison)")
    regress.add_argument("--config", type=Path, help="TOML config; [regress] sets thresholds per metric and alpha")

    report = commands.add_parser("report", help="write the markdown report and plots for stored measurements")
    _common(report)
    report.add_argument("--run", type=int, help="run id (default: the latest run)")
    report.add_argument("--all", action="store_true", help="every stored measurement instead of one run")
    report.add_argument("--since", help="measurements made on or after DATE (YYYY-MM-DD or an ISO time, UTC)")
    report.add_argument("--html", action="store_true", help="also write a self-contained report.html")

    tables = commands.add_parser("tables", help="regenerate the UDC paper's tables (markdown + CSV)")
    _common(tables)
    tables.add_argument("--paper", choices=["udc"], default="udc", help="the paper whose tables to regenerate (udc)")
    tables.add_argument("--only", choices=["table2", "table3", "table4", "table6", "table7"],
                        help="one table: table2 (computed, no training), table3 (ablation runs), table4 (sizes), "
                             "table6/table7 (ours beside the paper's cited peers); default: all")
    tables.add_argument("--seed", type=int, default=0, help="seed of the fixed pi and the Monte-Carlo samples")

    store = commands.add_parser("store", help="show or upgrade the results store's schema")
    _common(store)
    store.add_argument("action", choices=["status", "upgrade"],
                       help="status: the store's schema revision; upgrade: migrate an older store (SQLite: backed up first)")

    farm = commands.add_parser("farm", help="measure candidates on a Dask board farm into a shared store")
    _common(farm)
    farm.add_argument("--scheduler", required=True, help="Dask scheduler address, e.g. tcp://farm-head:8786")
    farm.add_argument("--candidate", type=Path, action="append", default=[], help="candidate directory (repeatable)")
    farm.add_argument("--target", default="vela", help="target a worker must offer as a Dask resource (default: vela)")
    farm.add_argument("--dataset", help="dataset for accuracy, loaded on the worker")
    farm.add_argument("--eval-samples", type=int, default=0, help="test images for accuracy (0 = all)")

    firmware = commands.add_parser("firmware", help="check a TFLM checkout and build its library for the firmware")
    firmware.add_argument("action", choices=["check", "setup"],
                          help="check: list what the checkout lacks; setup: check, then build the library once")
    firmware.add_argument("--tflm-root", type=Path, help="tflite-micro checkout (default: $TFLM_ROOT)")
    firmware.add_argument("--kernels", choices=["cmsis_nn", "reference"], default="cmsis_nn",
                          help="TFLM kernels for the Cortex-M55 (default: cmsis_nn)")
    firmware.add_argument("--ethos-u", action="store_true",
                          help="the library with the Ethos-U operator and driver (corstone300, board)")
    firmware.add_argument("--driver", help="ethos-u-core-driver checkout (default: $ETHOSU_DRIVER, then TFLM's downloads/)")
    firmware.add_argument("--debug", action="store_true", help="show tracebacks")

    doctor = commands.add_parser("doctor", help="list tools, datasets and targets with their status")
    _common(doctor, store=False)
    doctor.add_argument("--config", type=Path, help="TOML config whose [firmware] and [board] places to check too")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        warnings.showwarning = _show_warning
        return {"run": _run, "search": _search, "measure": _measure, "regress": _regress, "report": _report,
                "tables": _tables, "store": _store, "farm": _farm, "firmware": _firmware, "doctor": _doctor}[args.command](args)
    except (HarnessError, UsageError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: measurements so far are stored; run the same command again to resume", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings meant for users (a missed budget) as one line, not a source location."""
    print(f"warning: {message}", file=sys.stderr)


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [item.strip() for item in text.split(",") if item.strip()]


def _open_store(args, out_dir: Path):
    from results.store import Store

    return Store(args.store) if args.store else Store.for_output_dir(out_dir)


def _out_dir(args, default: str = "harness-out") -> Path:
    from harness.pipeline import ensure_writable

    return ensure_writable(args.out or Path(default))


def _run(args) -> int:
    from harness.config import load_config
    from harness.run import run_job

    overrides = {
        "run": {"target": args.target, "dataset": args.dataset, "data_path": args.data_path, "preset": args.preset,
                "out": str(args.out) if args.out else None, "budgets": _split(args.budgets),
                "strategies": _split(args.strategies), "ablation": args.ablation},
        "search": {"supernet": args.supernet},
        "measure": {"eval_samples": args.eval_samples, "allow_cpu_ops": args.allow_cpu_ops},
        **_target_overrides(args),
    }
    config = load_config(args.config, overrides)
    out_dir = _out_dir(args, config["run"]["out"])
    with _open_store(args, out_dir) as store:
        _, records, _ = run_job(config, out_dir, store, quiet=args.quiet, force=args.force)
    return 1 if any(r.get("status") != "ok" for r in records) else 0


def _search(args) -> int:
    from harness.config import load_config, parse_budget
    from harness.training_cache import cached_pretrain, pretrain_path
    from search.strategy import strategy_entry

    if args.macs_on_search is not None:
        raise UsageError("search takes its MAC budget as --mac-budget N (--macs is the NPU's MACs per cycle on "
                         "run and measure)")
    if args.budget is None and args.mac_budget is None:
        raise UsageError("give a budget: --budget 24KB (compressed size) or --mac-budget N (multiply-accumulates)")
    if args.mac_budget is not None and args.mac_budget <= 0:
        raise UsageError(f"--mac-budget {args.mac_budget} is not a positive MAC count")
    if args.processes < 1:
        raise UsageError(f"--processes {args.processes} must be at least 1")
    entry = strategy_entry(args.strategy)
    if args.processes > 1 and not entry.processes:
        raise UsageError(f"--processes spreads MC samples of a UDC or DNAS search; {args.strategy} has none")
    budget_bytes = parse_budget(args.budget) if args.budget is not None else None
    config = load_config(args.config, {"run": {"dataset": args.dataset, "data_path": args.data_path,
                                               "preset": args.preset, "out": str(args.out) if args.out else None},
                                       "search": {"supernet": args.supernet}})
    from harness.data import load_dataset
    from search.strategy.parallel import search_in_processes
    from search.strategy.pretrain import pretrain_state

    run, udc = config["run"], config["udc"]
    dataset = load_dataset(run["dataset"], run["data_path"] or None)
    searcher = entry.create(dataset, budget_bytes, args.mac_budget, entry.settings(config), quiet=args.quiet)
    out_dir = _out_dir(args, run["out"])
    searcher.pretrained = cached_pretrain(pretrain_path(out_dir, dataset.name, udc),
                                          lambda: pretrain_state(dataset, udc, args.quiet))
    if args.processes > 1:
        candidate, searched = search_in_processes(args.processes, dataset, budget_bytes, args.mac_budget, udc,
                                                  entry.options.get("vanilla", False), args.quiet, searcher.pretrained)
    else:
        candidate, searched = searcher.run(), searcher.searched
    directory = out_dir / "search" / candidate.name
    candidate.save(directory / "deployed")
    if searched is not None:
        searched.save(directory / "searched")
    meta = candidate.spec["meta"]
    cost = (f"size bound {meta['size_bits'] / 8:.0f} bytes of {budget_bytes:.0f}" if budget_bytes is not None
            else f"{meta['macs']:.0f} MACs of {args.mac_budget}")
    print(f"{candidate.name}: {cost}, constraint {'met' if meta['constraint_met'] else 'NOT MET'}"
          f"{' after repair' if meta.get('repair_moves') else ''}; float accuracy {100 * meta['accuracy_float']:.2f}%")
    print(f"deployed candidate: {directory / 'deployed'}" + (f"\nsearched candidate: {directory / 'searched'}"
                                                              if searched is not None else ""))
    print(f"measure it: python -m harness measure --candidate {directory / 'deployed'} --target vela")
    if not meta["constraint_met"]:
        print(f"error: {candidate.name} is over its budget (written, marked constraint_met=false); "
              "raise the budget or enable udc.repair", file=sys.stderr)
        return 1
    return 0


def _measure(args) -> int:
    from harness.config import load_config, target_options
    from harness.data import load_dataset
    from harness.pipeline import Evaluation, Pipeline, load_candidates, progress
    from targets import get_target

    if not args.candidate and not args.tflite:
        raise UsageError("nothing to measure: pass --candidate DIR or --tflite FILE")
    candidates = load_candidates(args.candidate)
    for path in args.tflite:
        if not path.is_file():
            raise UsageError(f"{path}: no such file; pass the path of an int8 .tflite model")
    dataset_name = args.dataset or next((c.spec.get("meta", {}).get("dataset") for c in candidates
                                         if c.spec.get("meta", {}).get("dataset")), None)
    dataset = load_dataset(dataset_name, args.data_path) if dataset_name else None
    for candidate in candidates if dataset is not None else ():
        shape, classes = tuple(candidate.spec["input_shape"]), candidate.spec["num_classes"]
        if shape != tuple(dataset.input_shape) or classes != dataset.num_classes:
            raise UsageError(f"candidate {candidate.name} takes {'x'.join(map(str, shape))} images in {classes} classes, "
                             f"but {dataset.name} has {'x'.join(map(str, dataset.input_shape))} in "
                             f"{dataset.num_classes}; pass the dataset it was trained on (--dataset)")
    config = load_config(args.config, {"run": {"target": args.target}, **_target_overrides(args)})
    target = get_target(config["run"]["target"], **target_options(config))
    reason = target.available()
    if reason:
        raise HarnessError(f"target {target.name} is not usable here: {reason}")
    out_dir = _out_dir(args)
    failed = 0
    with _open_store(args, out_dir) as store:
        pipeline = Pipeline(out_dir, store, target, Evaluation(dataset, args.eval_samples),
                            calibration_samples=config["measure"]["calibration_samples"],
                            force=args.force, allow_cpu_ops=bool(args.allow_cpu_ops))
        run_id = store.start_run("measure", {"candidates": [str(p) for p in args.candidate],
                                             "tflite": [str(p) for p in args.tflite], "target": target.name,
                                             "settings": target.settings()}, pipeline.provenance)
        if args.repeat < 1:
            raise UsageError(f"--repeat {args.repeat} must be at least 1")
        jobs = [(pipeline.measure_candidate, c) for c in candidates] + [(pipeline.measure_tflite, p) for p in args.tflite]
        jobs = [(repeat, *job) for repeat in range(args.repeat) for job in jobs]
        status = "failed"
        try:
            for repeat, measure, item in progress(jobs, len(jobs), "measure", args.quiet or args.json):
                pipeline.force = args.force or repeat > 0
                record = measure(item, run_id)
                store.link(run_id, record["id"])
                failed += record.get("status") != "ok"
                if args.json:
                    print(json.dumps(_json_record(record)), flush=True)
                elif record.get("status") != "ok":
                    print(f"{record['candidate_name']}: FAILED: {record['error']}", file=sys.stderr)
                else:
                    print(_text_record(record))
            status = "failed" if failed else "ok"
        finally:
            store.finish_run(run_id, status)
    if failed:
        print(f"error: {failed} of {len(jobs)} measurement(s) failed; they are stored with their errors", file=sys.stderr)
    return 1 if failed else 0


def _json_record(record: dict) -> dict:
    extra = record.get("extra") or {}  # a cache hit keeps target-specific figures there
    row = {key: record.get(key, extra.get(key)) for key in JSON_KEYS}
    row["candidate"] = record.get("candidate_name")
    row["cached"] = bool(record.get("cached"))
    return row


def _text_record(record: dict) -> str:
    def kib(key):
        value = record.get(key)
        return "—" if value is None else f"{value / 1024:.2f} KiB"

    accuracy = record.get("accuracy_int8")
    parts = [f"{record['candidate_name']} [{record['candidate_hash'][:12]}] on {record['target']}"
             + (" (cached)" if record.get("cached") else ""),
             f"  flash {kib('flash_bytes')}  sram {kib('sram_bytes')}  encoded weights {kib('encoded_weight_bytes')}",
             f"  size bound (RHS) {kib('rhs_bound_bytes')}  empirical entropy {kib('empirical_entropy_bytes')}  "
             f"range-coded {kib('coded_mask_bytes')}",
             (f"  npu cycles {record.get('npu_cycles')}  latency {1e3 * record['latency_s']:.3f} ms (Vela estimate)"
              if record.get("latency_s") is not None else
              f"  instructions per inference {record.get('instructions')}  bit-exact with host TFLM: "
              f"{record.get('bit_exact')}")
             + (f"  int8 accuracy {100 * accuracy:.2f}% on {record.get('accuracy_samples')} images" if accuracy is not None else "")]
    return "\n".join(parts)


def _regress(args) -> int:
    from harness.config import load_config
    from results.regress import HEADERS, compare, junit_xml, read_baseline, samples_from_rows, write_baseline
    from results.report import markdown_table

    settings = load_config(args.config)["regress"]
    alpha = settings.pop("alpha")
    out_dir = _out_dir(args)
    with _open_store(args, out_dir) as store:
        latest = samples_from_rows(_rows_of_runs(store, args.candidate, "--candidate"))
        if args.update_baseline:
            print(f"baseline written: {write_baseline(latest, args.update_baseline)}")
            return 0
        if not args.baseline:
            raise UsageError("give --baseline RUN[,RUN...] or a baseline file (or --update-baseline FILE to write one)")
        baseline_path = Path(args.baseline)
        baseline = (read_baseline(baseline_path) if baseline_path.is_file()
                    else samples_from_rows(_rows_of_runs(store, args.baseline, "--baseline")))
    verdicts, warnings_ = compare(baseline, latest, settings, alpha)
    for line in warnings_:
        print(f"warning: {line}", file=sys.stderr)
    print(markdown_table(HEADERS, [v.row() for v in verdicts], right=(4, 5, 6, 7)))
    counts = {name: sum(v.verdict == name for v in verdicts) for name in ("REGRESSED", "IMPROVED", "UNCHANGED")}
    print("\n" + ", ".join(f"{n} {name}" for name, n in counts.items()))
    if args.junit:
        junit_xml(verdicts, args.junit)
    return 1 if counts["REGRESSED"] else 0


def _rows_of_runs(store, spec: str | None, flag: str) -> list[dict]:
    """The measurements of runs ``12`` or ``12,13,14`` (default: the latest run), each row once."""
    if spec is None:
        latest = store.latest_run_id()
        if latest is None:
            raise UsageError("the store has no runs yet; run 'python -m harness run' first")
        ids = [latest]
    else:
        try:
            ids = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"{flag} {spec!r}: give run ids like 12 or 12,13,14, or a baseline file that exists") from None
    known = {run["id"] for run in store.runs()}
    missing = [i for i in ids if i not in known]
    if missing:
        raise UsageError(f"{flag}: no run {missing[0]} in the store; list runs with 'python -m harness report --all'")
    rows, seen = [], set()
    for run_id in ids:
        for row in store.measurements(run_id):
            if row["id"] not in seen:
                seen.add(row["id"])
                rows.append(row)
    return rows


def _report(args) -> int:
    import datetime as dt

    from results.report import write_html, write_report

    out_dir = _out_dir(args)
    with _open_store(args, out_dir) as store:
        if args.since:
            try:
                since = dt.datetime.fromisoformat(args.since)
            except ValueError:
                raise UsageError(f"--since {args.since!r} is not a date; write it like 2026-11-01 or 2026-11-01T18:00") from None
            rows, name = store.measurements(since=since), f"since-{since:%Y%m%dT%H%M}"
            title = f"UDC harness report: measurements since {since:%Y-%m-%d %H:%M} UTC"
            if not rows:
                raise UsageError(f"no measurements since {args.since}; try an earlier date or --all")
        elif args.all:
            rows, name, title = store.measurements(), "all", "UDC harness report: all measurements"
        else:
            run_id = args.run or store.latest_run_id()
            if run_id is None:
                raise UsageError(f"the store in {out_dir} has no runs yet; run 'python -m harness run' first")
            rows, name, title = store.measurements(run_id), f"run-{run_id}", f"UDC harness report: run {run_id}"
            if not rows:
                raise UsageError(f"run {run_id} has no measurements; list runs with 'python -m harness report --all'")
        # The history section follows this report's candidates through every run in the store.
        history = store.history([r["candidate_name"] for r in rows if r.get("candidate_name")])
        path = write_report(rows, out_dir / "reports" / name, title=title, history=history)
    print(path)
    if args.html:
        print(write_html(path))
    return 0


def _tables(args) -> int:
    from results.tables import paper_tables

    out_dir = _out_dir(args)
    with _open_store(args, out_dir) as store:
        rows = store.measurements()
    computed, text = None, ""
    if args.only in (None, "table2"):  # the search computes it (torch); the other tables read the store
        from search.table2 import format_table2, table2

        computed = table2(seed=args.seed)
        text = format_table2(computed)
    written = []
    for table in paper_tables(rows, computed, text):
        if args.only in (None, table.name):
            print(table.markdown())
            written += table.write(out_dir / "tables")
    print(f"written: {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _store(args) -> int:
    from results.store import SCHEMA_REVISION, STORE_FILENAME, Store

    out_dir = _out_dir(args)
    url = args.store or f"sqlite:///{(out_dir / STORE_FILENAME).resolve()}"
    if not args.store and not (out_dir / STORE_FILENAME).is_file():  # neither command makes a store
        raise UsageError(f"no store in {out_dir} (no {STORE_FILENAME}); pass the --out DIR of a run, or --store URL")
    with Store(url, upgrade=args.action == "upgrade", status_only=args.action == "status") as store:
        if store.upgraded_from:
            print(f"{store!r}: schema {store.upgraded_from} -> {SCHEMA_REVISION}"
                  + (f" (the old file is kept as {store.backup})" if store.backup else ""))
        elif store.revision != SCHEMA_REVISION:
            print(f"{store!r}: schema {store.revision}, older than this harness's {SCHEMA_REVISION}; "
                  f"upgrade it with '{store.upgrade_command()}' (keeps every row)")
            return 1
        else:
            print(f"{store!r}: schema {SCHEMA_REVISION}, current; {len(store.runs())} runs")
    return 0


def _farm(args) -> int:
    from harness.farm import candidate_directories, submit

    if not args.candidate:
        raise UsageError("nothing to measure: pass --candidate DIR (repeatable)")
    if not args.store:
        raise UsageError("the farm's workers write to one shared store: pass --store postgresql://USER@HOST/DB")
    directories = candidate_directories(args.candidate)  # bad paths fail here, before any task is sent
    summaries = submit(args.scheduler, directories, args.target, args.store, (args.out or Path("harness-out")).resolve(),
                       args.dataset, args.eval_samples, args.quiet)
    failed = [s for s in summaries if s["status"] != "ok"]
    for summary in failed:
        print(f"{summary['candidate']}: FAILED on {summary['worker_host']}: {summary['error']}", file=sys.stderr)
    return 1 if failed else 0


def _firmware(args) -> int:
    import os

    from harness import firmware

    root = args.tflm_root or (Path(os.environ["TFLM_ROOT"]) if os.environ.get("TFLM_ROOT") else None)
    if root is None:
        raise UsageError("no TFLM checkout given: pass --tflm-root DIR or set TFLM_ROOT (README: TFLM for the "
                         "firmware targets)")
    rows = firmware.check_tflm(root)
    width = max(len(name) for name, _, _ in rows)
    for name, ok, detail in rows:
        print(f"{'ok ' if ok else '-- '} {name.ljust(width)}  {detail}")
    driver = firmware.find_ethosu_driver(root, args.driver) if args.ethos_u else None
    if args.ethos_u:
        missing = firmware.check_ethosu_driver(driver)
        rows.append(("ethos-u driver", missing is None, missing or str(driver)))
        print(f"{'ok ' if rows[-1][1] else '-- '} {rows[-1][0].ljust(width)}  {rows[-1][2]}")
    library = firmware.find_tflm_library(root, args.kernels, "ethos_u" if args.ethos_u else None)
    print(f"{'ok ' if library else '-- '} {'library'.ljust(width)}  "
          f"{library or 'not built yet: python -m harness firmware setup' + (' --ethos-u' if args.ethos_u else '')}")
    if not all(ok for _, ok, _ in rows):
        return 2
    if args.action == "setup" and library is None:
        print(f"building TFLM ({args.kernels}{', Ethos-U' if driver else ''}) for the Cortex-M55, once; this takes "
              "minutes...", file=sys.stderr)
        print(firmware.build_tflm(root, args.kernels, driver))
    return 0


def _doctor(args) -> int:
    from harness.config import load_config
    from harness.doctor import checks

    rows = checks(load_config(args.config) if args.config else None)
    width = max(len(name) for name, _, _ in rows)
    for name, ok, detail in rows:
        print(f"{'ok ' if ok else '-- '} {name.ljust(width)}  {detail}")
    return 0 if all(ok for name, ok, _ in rows if name.startswith("target vela")) else 1
