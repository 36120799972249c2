"""A reply's deadline follows the work asked for: 'infer N W' gets the link's timeout plus an allowance per
inference, so ten slow runs are not a silent target while one silent run still is; and any malformed
device reply is a ProtocolError (a failed row), never a ValueError or OverflowError. ``SlowPeer`` is a
test double: a target over a socket pair that takes a set time per inference, as no real firmware does
on demand."""

import socket
import threading
import time

import numpy as np
import pytest

from targets.benchmark_replies import Inference
from targets.serial_link import ProtocolError, SerialLink
from targets.serial_target import SerialTarget
from targets.sessions import Session
from tests.faulty_peer import received_commands


class SlowPeer:
    """Test double of a target: answers 'infer N W' after (N + W) x ``per_inference_s`` of silence, with
    the next of ``results`` lines (if any) as its results."""

    def __init__(self, per_inference_s: float, results: list[bytes] = ()):
        self.host, self.device = socket.socketpair()
        self.per_inference_s, self.results = per_inference_s, list(results)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        for command in received_commands(self.device.recv):
            words = command.split(" ")
            if words[0] == "infer":
                time.sleep((int(words[1]) + int(words[2])) * self.per_inference_s)
                reply = b"m-infer-start\r\nm-lap-us-10\r\nm-lap-us-20\r\nm-instructions-100\r\nm-infer-done\r\n"
                reply += self.results.pop(0) + b"\r\n" if self.results else b""
            elif command.startswith("db load "):
                reply = f"m-[Expecting {words[2]} bytes]\r\n".encode()
            else:
                reply = b"m-load-done\r\n" if words[0] == "db" else b""
            try:
                self.device.sendall(reply + b"m-ready\r\n")
            except OSError:
                return


def _link(peer: SlowPeer, label: str, inference_s: float) -> SerialLink:
    link = SerialLink.over_socket(peer.host, 1.0, label=label)
    link.inference_s = inference_s
    return link


def test_ten_slow_inferences_are_not_a_silent_target_and_one_silent_one_is():
    link = _link(SlowPeer(per_inference_s=0.3), "slow", inference_s=0.5)
    started = time.monotonic()
    assert link.infer(10, 0).figures["instructions"] == 100  # 3 s of silence: past the 1 s timeout, inside 1 + 10 x 0.5 s
    assert time.monotonic() - started >= 3.0
    stalled = _link(SlowPeer(per_inference_s=5.0), "stalled", inference_s=0.5)
    started = time.monotonic()
    with pytest.raises(ProtocolError, match=r"^stalled: no reply to 'infer' within 1.5 s \(silent target\)$"):
        stalled.infer(1, 0)
    assert time.monotonic() - started < 3.0


def test_the_allowance_grows_with_the_inferences_seen():
    """An inference slower than the allowance raises it (to four times the slowest seen) for the next ones."""
    link = _link(SlowPeer(per_inference_s=0.4), "slow", inference_s=0.1)
    link.infer(1, 0)  # 0.4 s, inside 1 + 0.1 s
    assert link.inference_s >= 1.6
    link.infer(3, 0)  # 1.2 s of silence, inside 1 + 3 x 1.6 s; 1 + 3 x 0.1 s would have timed out


class _PeerSession(Session):
    def __init__(self, peer: SlowPeer):
        self.link = SerialLink.over_socket(peer.host, 1.0, label="dev")

    def close(self) -> None:
        self.link = None


class ResultsPeerTarget(SerialTarget):
    """Test double of a firmware target whose session is a ``SlowPeer`` replying the given results lines."""

    def __init__(self, results: list[bytes]):
        super().__init__()
        self._session = _PeerSession(SlowPeer(0.0, results))
        self._profile = {}  # a profile that announced no output size

    def available(self):
        return None

    def settings(self):
        return {}

    def tool_versions(self):
        return {}

    def build_image(self, tflite, workdir, label, arena_bytes):
        raise NotImplementedError

    def open_session(self, elf):
        raise NotImplementedError


def test_outputs_of_different_sizes_are_a_protocol_error_not_a_value_error():
    target = ResultsPeerTarget([b"m-results-int8-[1,2,3]", b"m-results-int8-[1,2]"])
    with pytest.raises(ProtocolError, match=r"^dev: 'infer' replied 3 values for sample 0 and 2 for sample 1$"):
        target.infer(np.zeros((2, 4), np.int8))


def test_a_board_reply_without_its_lap_time_is_a_protocol_error_not_a_key_error():
    from targets.board import BoardTarget

    board = BoardTarget(port="/dev/ttyACM0")
    with pytest.raises(ProtocolError, match=r"^board /dev/ttyACM0: 'infer' replied without its two m-lap-us "
                                            r"timestamps$"):
        board.platform_counters(Inference({"instructions": 4000, "npu_active_cycles": 1, "npu_total_cycles": 2}))
