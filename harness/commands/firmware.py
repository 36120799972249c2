"""``firmware``: a TFLM checkout checked and its library built for the firmware targets."""

from __future__ import annotations

import sys
from pathlib import Path

from core.errors import UsageError


def add_parser(commands) -> None:
    parser = commands.add_parser("firmware", help="check a TFLM checkout and build its library for the firmware")
    parser.add_argument("action", choices=["check", "setup"],
                        help="check: list what the checkout lacks; setup: check, then build the library once")
    parser.add_argument("--tflm-root", type=Path,
                        help="tflite-micro checkout (default: [firmware] tflm_root, then $TFLM_ROOT)")
    parser.add_argument("--kernels", choices=["cmsis_nn", "reference"],
                        help="TFLM kernels for the Cortex-M55 (default: [firmware] kernels, cmsis_nn)")
    parser.add_argument("--ethos-u", action="store_true",
                        help="the library with the Ethos-U operator and driver (corstone300, board)")
    parser.add_argument("--driver", help="ethos-u-core-driver checkout (default: [firmware] ethosu_driver, "
                                         "$ETHOSU_DRIVER, then TFLM's downloads/)")
    parser.add_argument("--config", type=Path, help="TOML config whose [firmware] section names the checkouts")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def main(args) -> int:
    from harness.config import load_config
    from targets import firmware

    places = load_config(args.config)["firmware"]
    kernels = args.kernels or places["kernels"]
    root = firmware.tflm_checkout(args.tflm_root or places["tflm_root"] or None)
    if root is None:
        raise UsageError("no TFLM checkout given: pass --tflm-root DIR, set [firmware] tflm_root in --config or set "
                         "TFLM_ROOT (README: TFLM for the firmware targets)")
    rows = firmware.check_tflm(root)
    width = max(len(name) for name, _, _ in rows)
    for name, ok, detail in rows:
        print(f"{'ok ' if ok else '-- '} {name.ljust(width)}  {detail}")
    driver = firmware.find_ethosu_driver(root, args.driver or places["ethosu_driver"] or None) if args.ethos_u else None
    if args.ethos_u:
        missing = firmware.check_ethosu_driver(driver)
        rows.append(("ethos-u driver", missing is None, missing or str(driver)))
        print(f"{'ok ' if rows[-1][1] else '-- '} {rows[-1][0].ljust(width)}  {rows[-1][2]}")
    library = firmware.find_tflm_library(root, kernels, "ethos_u" if args.ethos_u else None)
    print(f"{'ok ' if library else '-- '} {'library'.ljust(width)}  "
          f"{library or 'not built yet: python -m harness firmware setup' + (' --ethos-u' if args.ethos_u else '')}")
    if not all(ok for _, ok, _ in rows):
        return 2
    if args.action == "setup" and library is None:
        print(f"building TFLM ({kernels}{', Ethos-U' if driver else ''}) for the Cortex-M55, once; this takes "
              "minutes...", file=sys.stderr)
        print(firmware.build_tflm(root, kernels, driver))
    return 0
