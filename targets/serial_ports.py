"""A device's serial port named by one string: a tty (``/dev/ttyACM0``), ``socket://HOST:PORT`` (a TCP
serial bridge, or an emulator's UART on TCP), ``unix://PATH`` (QEMU's UART on a Unix socket), or any
other URL pyserial opens (``rfc2217://``). Opened, it is a ``SerialLink`` and a ``close``."""

from __future__ import annotations

import socket
from pathlib import Path

from core.errors import HarnessError
from targets.serial_link import SerialLink

CONNECT_TIMEOUT_S = 10.0


def port_problem(port: str | None) -> str | None:
    """None when ``port`` names something that can be opened here, else why not and what to pass."""
    if not port:
        return "no port: pass --port /dev/ttyACM0, socket://HOST:PORT or unix://PATH (config: [mlperf_dut] port)"
    if port.startswith(("socket://", "unix://")):
        return None
    try:
        import serial  # noqa: F401
    except ImportError:
        return "pyserial is not installed; run: pip install pyserial"
    if "://" not in port and not Path(port).exists():
        return f"serial port {port} does not exist; is the device plugged in? (ls /dev/ttyACM* /dev/ttyUSB*)"
    return None


def open_port(port: str, baud: int, timeout_s: float, label: str, **link_options) -> tuple[SerialLink, callable]:
    """The link to ``port`` at ``baud`` (ignored by sockets) and the function that closes it."""
    try:
        if port.startswith("socket://"):
            host, _, number = port[len("socket://"):].rpartition(":")
            connection = socket.create_connection((host or "localhost", int(number)), timeout=CONNECT_TIMEOUT_S)
            return SerialLink.over_socket(connection, timeout_s, label, **link_options), connection.close
        if port.startswith("unix://"):
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.settimeout(CONNECT_TIMEOUT_S)
            try:
                connection.connect(port[len("unix://"):])
            except BaseException:
                connection.close()
                raise
            return SerialLink.over_socket(connection, timeout_s, label, **link_options), connection.close
        import serial

        device = serial.serial_for_url(port, baudrate=baud, timeout=timeout_s)
        return SerialLink.over_serial(device, timeout_s, label, **link_options), device.close
    except ValueError:
        raise HarnessError(f"{label}: cannot read the port {port!r}; write socket://HOST:PORT with a port number") from None
    except OSError as error:  # pyserial's SerialException is an OSError
        raise HarnessError(f"{label}: cannot open {port}: {error.strerror or error}") from None
