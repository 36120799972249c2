"""What this machine can do: packages, datasets and targets, each with its status and fix."""

from __future__ import annotations

from harness.data import FASHION_MNIST_DEFAULT
from harness.provenance import package_version
from targets import TARGETS, get_target

PACKAGES = (
    ("tensorflow", ("tensorflow-cpu", "tensorflow"), "TFLite conversion"),
    ("vela", ("ethos-u-vela",), "Ethos-U compiler"),
    ("tflite-micro", ("tflite-micro",), "host TFLM interpreter"),
    ("torch", ("torch",), "search and training"),
    ("constriction", ("constriction",), "range coder for coded_mask_bytes"),
    ("sqlalchemy", ("sqlalchemy",), "measurement store"),
    ("matplotlib", ("matplotlib",), "report plots"),
)


def checks() -> list[tuple[str, bool, str]]:
    rows = []
    for label, distributions, purpose in PACKAGES:
        found = package_version(distributions)
        rows.append((f"package {label}", found is not None,
                     f"{found} ({purpose})" if found else f"missing ({purpose}); pip install {distributions[0]}"))
    fashion = all((FASHION_MNIST_DEFAULT / f"{stem}.gz").is_file() for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"))
    rows.append(("dataset fashion-mnist", fashion, str(FASHION_MNIST_DEFAULT) if fashion
                 else "missing; sudo apt-get install dataset-fashion-mnist (or pass --data-path DIR)"))
    for name, description in TARGETS.items():
        reason = get_target(name).available()
        rows.append((f"target {name}", reason is None, description if reason is None else reason))
    return rows

