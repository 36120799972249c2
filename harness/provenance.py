"""Where a measurement came from: tool versions, git SHA, host, time."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import harness

PACKAGES = {"tensorflow": ("tensorflow-cpu", "tensorflow"), "numpy": ("numpy",), "torch": ("torch",)}


def package_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


@functools.cache
def git_sha() -> str:
    """The harness's own commit, with -dirty when the work tree has changes; 'unknown' outside git."""
    root = Path(harness.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def tool_versions(target_versions: dict) -> dict:
    versions = {"harness": harness.__version__, "python": platform.python_version()}
    versions.update({key: package_version(names) for key, names in PACKAGES.items()})
    versions.update(target_versions)
    return {key: value for key, value in versions.items() if value is not None}


def provenance(target_versions: dict) -> dict:
    return {"tool_versions": tool_versions(target_versions), "git_sha": git_sha(), "host": socket.gethostname()}
