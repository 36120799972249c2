"""``measure``: candidates or .tflite files measured on a target, one line or JSON object each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.errors import UsageError
from harness.commands.common import common_options, open_store, output_dir, target_arguments, target_overrides

JSON_KEYS = ("candidate", "candidate_hash", "target", "status", "error", "cached", "flash_bytes",
             "flash_predicted_bytes", "sram_bytes",
             "encoded_weight_bytes", "original_weight_bytes", "npu_cycles", "total_cycles", "latency_s",
             "latency_is_estimate", "rhs_bound_bytes", "empirical_entropy_bytes", "coded_mask_bytes",
             "accuracy_int8", "accuracy_float", "accuracy_samples", "tflm_arena_bytes", "instructions", "bit_exact",
             "flash_breakdown", "throughput_per_s", "mlperf_model_id", "device_name", "mlperf_windows",
             "windows_meet_min", "target_settings", "tool_versions", "git_sha", "host")


def add_parser(commands) -> None:
    parser = commands.add_parser("measure", help="measure candidates or .tflite files on a target")
    common_options(parser)
    target_arguments(parser)
    parser.add_argument("--candidate", type=Path, action="append", default=[], help="candidate directory (repeatable)")
    parser.add_argument("--tflite", type=Path, action="append", default=[], help="int8 .tflite file (repeatable)")
    parser.add_argument("--dataset", help="dataset for accuracy (default: the candidate's own; none for .tflite)")
    parser.add_argument("--data-path", help="dataset directory")
    parser.add_argument("--eval-samples", type=int, default=0, help="test images for accuracy (0 = all, the default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model on stdout")
    parser.add_argument("--force", action="store_true", help="re-measure even when the store has this measurement")
    parser.add_argument("--retry-failed", action="store_true",
                        help="measure again models whose stored failure they caused themselves (a compiler error, a crash)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each model N times (samples for 'regress'; repeats always re-measure)")


def main(args) -> int:
    from harness.config import load_config
    from harness.measure_job import evaluation_dataset, measure_job
    from harness.pipeline import Evaluation, load_candidates
    from targets import open_target, target_entry

    config = load_config(args.config, {"run": {"target": args.target}, "measure": {"allow_cpu_ops": args.allow_cpu_ops},
                                       **target_overrides(args)})
    holds_model = getattr(target_entry(config["run"]["target"]).load(), "holds_model", False)
    if holds_model and (args.candidate or len(args.tflite) > 1):
        raise UsageError(f"target {config['run']['target']} measures the model already on the device: pass no "
                         "--candidate, and at most one --tflite naming that model")
    if not holds_model and not args.candidate and not args.tflite:
        raise UsageError("nothing to measure: pass --candidate DIR or --tflite FILE")
    candidates = load_candidates(args.candidate)
    for path in args.tflite:
        if not path.is_file():
            raise UsageError(f"{path}: no such file; pass the path of an int8 .tflite model")
    dataset = evaluation_dataset(candidates, args.dataset, args.data_path)
    target = open_target(config)
    out_dir = output_dir(args)

    def show(record: dict) -> None:
        if args.json:
            print(json.dumps(_json_record(record)), flush=True)
        elif record.get("status") != "ok":
            stored = " (stored failure; --retry-failed measures it again)" if record.get("cached") else ""
            print(f"{record['candidate_name']}: FAILED: {record['error']}{stored}", file=sys.stderr)
        elif not args.quiet:
            print(_text_record(record))

    with open_store(args, out_dir) as store:
        failed, measured = measure_job(config, target, store, out_dir, candidates, args.tflite,
                                       Evaluation(dataset, args.eval_samples),
                                       {"candidates": [str(p) for p in args.candidate],
                                        "tflite": [str(p) for p in args.tflite]},
                                       args.repeat, args.force, args.quiet or args.json, show, args.retry_failed)
    if failed:
        print(f"error: {failed} of {measured} measurement(s) failed; they are stored with their errors", file=sys.stderr)
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
             f"  flash {kib('flash_bytes')}"
             + (f" (Flash model: {kib('flash_predicted_bytes')})" if record.get("flash_predicted_bytes") else "")
             + f"  sram {kib('sram_bytes')}  encoded weights {kib('encoded_weight_bytes')}",
             f"  size bound (RHS) {kib('rhs_bound_bytes')}  empirical entropy {kib('empirical_entropy_bytes')}  "
             f"range-coded {kib('coded_mask_bytes')}",
             (f"  npu cycles {record.get('npu_cycles')}  latency {1e3 * record['latency_s']:.3f} ms (Vela estimate)"
              if record.get("latency_is_estimate") else
              f"  latency {1e3 * record['latency_s']:.3f} ms (median of {len(record.get('mlperf_windows') or [])} "
              f"MLPerf Tiny windows)" if record.get("mlperf_windows") else
              f"  instructions per inference {record.get('instructions')}  bit-exact with host TFLM: "
              f"{record.get('bit_exact')}")
             + (f"  int8 accuracy {100 * accuracy:.2f}% on {record.get('accuracy_samples')} images" if accuracy is not None else "")]
    return "\n".join(parts)
