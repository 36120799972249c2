"""Faults on the serial link, each detected and reported in one line. ``FaultInjectingPeer`` is a test
double: a thread playing a misbehaving target over a socket pair, for the faults real firmware does
not produce on demand."""

import socket
import threading

import numpy as np
import pytest

from targets.serial_protocol import ProtocolError, SerialLink


class FaultInjectingPeer:
    """Test double of a target: answers each command with the scripted bytes (None: stay silent)."""

    def __init__(self, replies: dict[str, list[bytes] | None]):
        self.host, self.device = socket.socketpair()
        self.replies = replies
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        buffer = b""
        while True:
            try:
                chunk = self.device.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"%" in buffer:
                command, buffer = buffer.split(b"%", 1)
                reply = self.replies.get(command.decode().split(" ")[0])
                if reply == "close":
                    self.device.close()
                    return
                for piece in reply or []:
                    self.device.sendall(piece)

    def link(self, timeout_s=0.5):
        return SerialLink.over_socket(self.host, timeout_s, label="test-target")


def test_a_line_split_across_reads_is_reassembled():
    peer = FaultInjectingPeer({"name": [b"m-name-d", b"ut-[board]\r", b"\nm-rea", b"dy\r\n"]})
    assert peer.link().command("name") == ["m-name-dut-[board]"]


def test_results_parse_into_int8():
    peer = FaultInjectingPeer({"results": [b"m-results-[-128,0,5,127]\r\nm-ready\r\n"]})
    np.testing.assert_array_equal(peer.link().results(), np.array([-128, 0, 5, 127], np.int8))


@pytest.mark.parametrize("replies,message", [
    ({"name": [b"m-name-dut-[\xff\xfe]\r\nm-ready\r\n"]}, "garbled bytes on the link"),
    ({"name": [b"\x07\x1bxx\r\nm-ready\r\n"]}, "garbled line on the link"),
    ({"name": None}, "no reply within 0.5 s"),
    ({"name": "close"}, "link closed mid-reply"),
    ({"name": [b"m-init-done\r\nm-ready\r\n"]}, "the target reset during 'name'"),
    ({"infer": [b"m-warmup-start-1\r\ne-[arena too small]\r\nm-ready\r\n"]}, "'infer' failed on the target: arena too small"),
    ({"infer": [b"m-infer-done\r\nm-ready\r\n"]}, "without its m-instructions line"),
])
def test_faults_are_one_line_errors(replies, message):
    peer = FaultInjectingPeer(replies)
    command = next(iter(replies))
    with pytest.raises(ProtocolError, match=message) as caught:
        if command == "infer":
            peer.link().infer(1, 1)
        else:
            peer.link().command(command)
    assert "\n" not in str(caught.value)
