"""What the commands share: common options, target options, the output directory and the store."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import UsageError
from search.settings import RANDOM_PROTOCOLS
from targets.vela_compiler import MACS

def common_options(parser: argparse.ArgumentParser, store: bool = True) -> None:
    parser.add_argument("--out", type=Path, help="output directory for artifacts, store and reports (default: ./harness-out)")
    if store:
        parser.add_argument("--store", help="store URL (default: sqlite file in the output directory; postgresql://... for a shared store)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-candidate lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="where to measure (default: vela); see 'doctor'")
    parser.add_argument("--accelerator", help="Ethos-U55 MAC config: ethos-u55-32|64|128|256 (default: ethos-u55-128)")
    parser.add_argument("--system-config", help="Vela system config (default: Ethos_U55_High_End_Embedded)")
    parser.add_argument("--memory-mode", help="Vela memory mode (default: Shared_Sram)")
    parser.add_argument("--allow-cpu-ops", action="store_true", default=None,
                        help="measure models with operators Vela leaves on the CPU instead of failing them")
    parser.add_argument("--macs", type=int, choices=MACS,
                        help="Ethos-U55 MACs per cycle: --accelerator ethos-u55-N (corstone300: -C ethosu.num_macs)")
    parser.add_argument("--port", help="board and mlperf-dut targets: the serial port, /dev/ttyACM0, socket://HOST:PORT "
                        "or unix://PATH (config: [board] port, [mlperf_dut] port)")
    parser.add_argument("--chunk-bytes", type=int,
                        help="mlperf-dut: input bytes per 'db' command (default 31, as MLPerf Tiny's runner sends)")
    parser.add_argument("--probe", help="board target: pyOCD probe id (default: the only one attached)")
    parser.add_argument("--config", type=Path, help="TOML config (sections run, search, measure, vela, firmware, board)")


def target_overrides(args) -> dict:
    """The config sections the target options on the command line override."""
    if args.macs and args.accelerator and args.accelerator != f"ethos-u55-{args.macs}":
        raise UsageError(f"--macs {args.macs} contradicts --accelerator {args.accelerator}; give one of them")
    accelerator = f"ethos-u55-{args.macs}" if args.macs else args.accelerator
    return {"vela": {"accelerator": accelerator, "system_config": args.system_config, "memory_mode": args.memory_mode},
            "board": {"port": args.port, "probe": args.probe},
            "mlperf_dut": {"port": args.port, "chunk_bytes": args.chunk_bytes}}


def training_options(parser: argparse.ArgumentParser, full_help: str) -> None:
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", dest="preset", action="store_const", const="quick", help="minutes on 2 cores (default)")
    preset.add_argument("--full", dest="preset", action="store_const", const="full", help=full_help)
    preset.add_argument("--preset", choices=["quick", "full", "paper"],
                        help="quick and full are scaled to CPUs; paper is the UDC paper's recipe (SGD, 50 + 200 epochs, "
                        "32 MC samples, 344 finetuning epochs: for GPUs)")
    parser.add_argument("--dataset", help="fashion-mnist (default), cifar10, cifar100, synthetic")
    parser.add_argument("--data-path", help="dataset directory (CIFAR: the extracted python-pickle folder)")
    parser.add_argument("--supernet", help="mbv2 (default) or resnet")
    parser.add_argument("--device", help="where pretraining, the searches and finetuning train: auto (default: the "
                        "first CUDA GPU torch sees, else the CPU), cpu, cuda or cuda:N")
    parser.add_argument("--random-protocol", choices=RANDOM_PROTOCOLS,
                        help="random search: shared (default: the trials share one search's steps, the winner is "
                        "finetuned) or paper (every trial gets the full finetuning, the best is the result; "
                        "[udc] random_protocol)")


def search_overrides(args) -> dict:
    """The ``[udc]`` settings the training options on the command line override."""
    return {"device": args.device, "random_protocol": args.random_protocol}


def split_list(text: str | None) -> list[str] | None:
    return None if text is None else [item.strip() for item in text.split(",") if item.strip()]


def open_store(args, out_dir: Path):
    from results.store import Store

    return Store(args.store) if args.store else Store.for_output_dir(out_dir)


def output_dir(args, default: str = "harness-out") -> Path:
    from harness.pipeline import ensure_writable

    return ensure_writable(args.out or Path(default))
