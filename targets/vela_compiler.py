"""The Vela compiler driver: int8 TFLite -> Vela-compiled model + performance report, in-process.

Calls Vela's C++ core (``ethosu.regor.compile``) directly with the same system-config text and
compiler options the ``vela`` CLI builds (9-29 ms instead of 0.3 s per subprocess). The CPU/NPU
placement of every operator is read from the compiled model, so an operator that falls back to
the CPU is named rather than silently slowing the model down.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import HarnessError, ModelError, UsageError
from core.supervised import worker
from core.tflite_model import read_tflite

MACS = (32, 64, 128, 256)  # the Ethos-U55's configurations: MACs per cycle
ACCELERATORS = tuple(f"ethos-u55-{macs}" for macs in MACS)
DEFAULT_ACCELERATOR = "ethos-u55-128"
DEFAULT_SYSTEM_CONFIG = "Ethos_U55_High_End_Embedded"
DEFAULT_MEMORY_MODE = "Shared_Sram"
WORKER = "Vela compiler"
COMPILE_SECONDS = 600.0  # the main job's networks compile in 10-30 ms, MobileNetV2 at 96x96 in seconds


@dataclass(frozen=True)
class VelaSettings:
    accelerator: str = DEFAULT_ACCELERATOR
    system_config: str = DEFAULT_SYSTEM_CONFIG
    memory_mode: str = DEFAULT_MEMORY_MODE
    optimise: str = "Performance"

    def as_dict(self) -> dict:
        return {"accelerator": self.accelerator, "system_config": self.system_config,
                "memory_mode": self.memory_mode, "optimise": self.optimise}

    @property
    def macs(self) -> int:
        """MACs per cycle of the accelerator configuration."""
        return int(self.accelerator.rsplit("-", 1)[1])

    @classmethod
    def from_options(cls, accelerator: str | None = None, system_config: str | None = None,
                     memory_mode: str | None = None, optimise: str | None = None) -> "VelaSettings":
        """The settings every Vela-compiling target uses: the options given (a config's [vela] section, the
        command line), Vela's defaults for the rest, checked against Vela's own configuration file."""
        given = {"accelerator": accelerator, "system_config": system_config, "memory_mode": memory_mode,
                 "optimise": optimise}
        settings = cls(**{key: value for key, value in given.items() if value})
        validate_settings(settings)
        return settings


@dataclass
class CompiledModel:
    model: bytes
    flash_bytes: int  # read-only peak: encoded weights, scales/biases, LUTs = what sits in Flash
    sram_bytes: int
    original_weight_bytes: int
    encoded_weight_bytes: int
    npu_cycles: int
    total_cycles: int
    mac_count: int
    core_clock_hz: float
    cpu_operators: list[str] = field(default_factory=list)

    @property
    def latency_s(self) -> float:
        """Vela's estimate: total cycles at the system config's core clock."""
        return self.total_cycles / self.core_clock_hz


def config_file() -> Path:
    from ethosu.vela import architecture_features

    return Path(architecture_features.CONFIG_FILES_PATH) / "Arm" / "vela.ini"


def list_configs() -> dict[str, list[str]]:
    sections = [line.strip()[1:-1] for line in config_file().read_text().splitlines() if line.startswith("[")]
    return {"system_config": [s.split(".", 1)[1] for s in sections if s.startswith("System_Config.")],
            "memory_mode": [s.split(".", 1)[1] for s in sections if s.startswith("Memory_Mode.")]}


def validate_settings(settings: VelaSettings) -> None:
    if settings.accelerator not in ACCELERATORS:
        raise UsageError(f"unknown accelerator config {settings.accelerator!r}; choose one of {', '.join(ACCELERATORS)}")
    known = list_configs()
    if settings.system_config not in known["system_config"]:
        raise UsageError(f"unknown Vela system config {settings.system_config!r}; choose one of {', '.join(known['system_config'])}")
    if settings.memory_mode not in known["memory_mode"]:
        raise UsageError(f"unknown Vela memory mode {settings.memory_mode!r}; choose one of {', '.join(known['memory_mode'])}")
    if settings.optimise not in ("Performance", "Size"):
        raise UsageError(f"unknown Vela optimise strategy {settings.optimise!r}; choose Performance or Size")


def compile_model(tflite: bytes, settings: VelaSettings = VelaSettings(), label: str = "model",
                  log: Path | None = None) -> CompiledModel:
    """Compile in the Vela worker process (``core.supervised``): a crash or a hang of Vela's native
    compiler fails this model (``NativeCrash``), not the harness."""
    validate_settings(settings)
    return worker(WORKER).call(compile_in_process, tflite, settings, label, label=label, doing="compiling",
                               timeout=COMPILE_SECONDS, log=log)


def compile_in_process(tflite: bytes, settings: VelaSettings = VelaSettings(), label: str = "model") -> CompiledModel:
    from ethosu import regor
    from ethosu.vela import vela as vela_cli
    from ethosu.vela.architecture_features import ArchitectureFeatures

    with contextlib.redirect_stdout(io.StringIO()):  # Vela prints "Info:" lines that would corrupt --json output
        arch = ArchitectureFeatures(vela_config_files=[str(config_file())], accelerator_config=settings.accelerator,
                                    system_config=settings.system_config, memory_mode=settings.memory_mode,
                                    max_blockdep=ArchitectureFeatures.MAX_BLOCKDEP, verbose_config=False,
                                    arena_cache_size=None)
    system_config = (f"[architecture]\nmacs={arch.num_macs_per_cycle}\ncores={arch.ncores}\n"
                     f"[vela]\nsystem_config_name={arch.system_config}\nmemory_mode_name={arch.memory_mode}\n"
                     + config_file().read_text())
    # Positional arguments mirror the CLI's defaults.
    options = vela_cli.get_compiler_config(
        True, False, False, False, settings.optimise, arch.arena_cache_size, False, False, False, False, False,
        False, True, "tflite", False, False, False, False, False, "COP1", False, 16, "HillClimb", 10.0)
    accelerator = "".join(part.capitalize() for part in settings.accelerator.split("-")[:-1])  # ethos-u55-128 -> EthosU55
    try:
        compiled = regor.compile(accelerator, tflite, "TFLITE", system_config, options=options, verbose=False)
    except Exception as exc:
        raise ModelError(f"{label}: Vela could not compile the model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    report = compiled.perf_report
    memories = {str(name).lower(): m.peakUsage for name, m in report.memories.items()}
    sram = memories.get("sram", 0)
    if "onchipflash" not in memories and "offchipflash" not in memories:
        sram -= report.readOnlyPeakUsage  # Sram_Only: constants share the SRAM, count them as Flash only
    model = bytes(compiled.model)
    # Whatever Vela left outside its ethos-u custom operators runs on the CPU.
    compiled_info = read_tflite(model, label=f"{label} (Vela output)")
    cpu_ops = [f"{op.name} ({compiled_info.tensors[op.outputs[0]].name})" if op.outputs else op.name
               for op in compiled_info.operators if op.name != "ethos-u"]
    return CompiledModel(
        model=model,
        flash_bytes=int(report.readOnlyPeakUsage),
        sram_bytes=int(sram),
        original_weight_bytes=int(report.originalWeights),
        encoded_weight_bytes=int(report.encodedWeights),
        npu_cycles=int(report.npuCycles),
        total_cycles=int(report.totalCycles),
        mac_count=int(report.macCount),
        core_clock_hz=float(arch.core_clock),
        cpu_operators=cpu_ops,
    )


def vela_version() -> str:
    from ethosu.vela._version import __version__

    return __version__


def per_operator_cycles(tflite: bytes, settings: VelaSettings = VelaSettings()) -> list[tuple[str, int]]:
    """(TFLite output tensor name, Vela's cycle estimate) per operator, from the CLI's
    ``--verbose-performance`` per-layer report (the in-process report has totals only); ~0.3 s, in the
    Vela worker process."""
    validate_settings(settings)
    return worker(WORKER).call(_per_operator_cycles, tflite, settings, label="a layer-cost model",
                               doing="compiling", timeout=COMPILE_SECONDS)


def _per_operator_cycles(tflite: bytes, settings: VelaSettings) -> list[tuple[str, int]]:
    import csv
    import tempfile

    from ethosu.vela import vela as vela_cli

    with tempfile.TemporaryDirectory(prefix="vela-layers-") as workdir:
        model = Path(workdir) / "model.tflite"
        model.write_bytes(tflite)
        argv = [str(model), "--accelerator-config", settings.accelerator, "--system-config", settings.system_config,
                "--memory-mode", settings.memory_mode, "--config", str(config_file()), "--verbose-performance",
                "--output-dir", str(Path(workdir) / "out")]
        with contextlib.redirect_stdout(io.StringIO()):
            if vela_cli.main(argv) != 0:
                raise HarnessError("Vela could not compile the model for its per-layer report")
        report = next((Path(workdir) / "out").glob("*_per-layer.csv"))
        with open(report, newline="") as handle:
            return [(row["Name"], int(float(row["Op Cycles"]))) for row in csv.DictReader(handle)]
