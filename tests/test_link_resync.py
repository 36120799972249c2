"""A link that never lies: after any error the next command gets its own reply, never a late one of an
earlier command; a reset is seen anywhere in a line; a flood without line ends is garbage, not silence;
a write to a link that is gone is one error line. ``LatePeer`` is a test double: a single-threaded
device over a socket pair answering each command in turn with scripted pieces and pauses, for the
late, garbled and unprompted replies real firmware does not produce on demand."""

import socket
import threading
import time

import pytest

from targets.serial_link import MAX_LINE_BYTES, ProtocolError, SerialLink
from tests.faulty_peer import received_commands

NAME = [(0.0, b"m-name-dut-[peer]\r\nm-ready\r\n")]


def results_reply(value: int) -> bytes:
    return f"m-results-[{value / 10:0.3f}]\r\nm-results-int8-[{value}]\r\nm-ready\r\n".encode()


class LatePeer:
    """Answers each command with the next scripted reply for its first word (pieces of (pause s, bytes),
    sent in order, the device busy meanwhile); ``name`` is always answered at once."""

    def __init__(self, replies: dict[str, list]):
        self.host, self.device = socket.socketpair()
        self.replies, self.commands = replies, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        for command in received_commands(self.device.recv):
            self.commands.append(command)
            word = command.split(" ")[0]
            pieces = self.replies[word].pop(0) if self.replies.get(word) else NAME if word == "name" else []
            for pause, data in pieces:
                time.sleep(pause)
                try:
                    self.device.sendall(data)
                except OSError:
                    return

    def link(self, timeout_s: float = 0.5) -> SerialLink:
        return SerialLink.over_socket(self.host, timeout_s, label="dev")


def test_a_reply_too_late_for_its_command_is_never_the_next_commands():
    """'results' times out; its reply arrives later; the next 'results' returns the second value, not the first."""
    peer = LatePeer({"results": [[(0.0, b"m-warmup-start-0\r\n"), (0.9, results_reply(10))], [(0.0, results_reply(20))]]})
    link = peer.link()
    with pytest.raises(ProtocolError, match=r"^dev: no reply to 'results' within 0.5 s \(silent target\)$"):
        link.results()
    assert link.stale
    assert link.results()[1].tolist() == [20]
    assert peer.commands == ["results", "name", "results"] and not link.stale


def test_garbage_bytes_before_a_reply_leave_no_stale_lines_behind():
    peer = LatePeer({"results": [[(0.0, b"\xff\xfe\r\n" + results_reply(10))], [(0.0, results_reply(20))]]})
    link = peer.link()
    with pytest.raises(ProtocolError, match="garbled bytes on the link"):
        link.results()
    assert link.results()[1].tolist() == [20]


def test_a_slow_trickle_past_the_deadline_is_thrown_away_before_the_next_command():
    trickle = [(0.04, bytes([byte])) for byte in results_reply(10)]  # about 2.5 s: never quiet for 0.2 s
    peer = LatePeer({"results": [trickle, [(0.0, results_reply(20))]]})
    link = peer.link(timeout_s=1.0)
    with pytest.raises(ProtocolError, match="silent target"):
        link.results()
    assert link.results()[1].tolist() == [20]


def test_an_unprompted_reset_fails_the_command_it_interrupts_and_not_the_one_after():
    banner = b"m-timestamp-mode-performance\r\nm-lap-us-3\r\nm-init-done\r\nm-ready\r\n"
    peer = LatePeer({"results": [[(0.0, banner)], [(0.0, results_reply(20))]]})
    link = peer.link()
    with pytest.raises(ProtocolError, match=r"^dev: the target reset during 'results'$"):
        link.results()
    assert link.results()[1].tolist() == [20]  # the banner's m-ready was not taken for this reply


def test_a_reset_in_the_middle_of_a_line_is_a_reset():
    peer = LatePeer({"db": [[(0.0, b"m-[Expectm-timestamp-mode-performance\r\nm-init-done\r\nm-ready\r\n")]]})
    with pytest.raises(ProtocolError, match=r"^dev: the target reset during 'db'$"):
        peer.link().load_input(b"\x01\x02")
    peer = LatePeer({"db": [[(0.0, b"m-[Expectm-init-done\r\nm-ready\r\n")]]})
    with pytest.raises(ProtocolError, match=r"^dev: the target reset during 'db'$"):
        peer.link().load_input(b"\x01\x02")


def test_a_flood_without_line_ends_is_garbage_named_at_the_line_cap_not_silence():
    flood = b"x" * (9_400_000)
    peer = LatePeer({"results": [[(0.0, flood)]]})
    link = peer.link(timeout_s=30.0)
    started = time.monotonic()
    with pytest.raises(ProtocolError, match=r"^dev: \d+ bytes without a line end \(garbage on the link, or a wrong "
                                            r"baud rate\)$") as caught:
        link.results()
    assert MAX_LINE_BYTES < int(str(caught.value).split()[1]) <= MAX_LINE_BYTES + 4096
    assert time.monotonic() - started < 10.0  # told at the cap, not after the 30 s deadline


def test_a_link_that_went_away_is_one_line_on_the_command_and_on_the_resync():
    peer = LatePeer({"results": [[(0.0, b"\xff\r\n")]]})
    link = peer.link()
    with pytest.raises(ProtocolError, match="garbled"):
        link.results()
    peer.device.close()
    with pytest.raises(ProtocolError, match=r"^dev: link closed \(the target exited or was killed\)$") as caught:
        link.command("name")
    assert "\n" not in str(caught.value)
    fresh = LatePeer({})
    link = fresh.link()
    fresh.device.close()
    time.sleep(0.05)
    with pytest.raises(ProtocolError, match=r"^dev: link (failed|closed)"):
        link.command("name")


def test_an_error_reply_is_followed_by_a_handshake_and_the_next_reply_is_its_own():
    peer = LatePeer({"infer": [[(0.0, b"e-[arena too small]\r\nm-ready\r\n")]], "results": [[(0.0, results_reply(30))]]})
    link = peer.link()
    with pytest.raises(ProtocolError, match="'infer' failed on the target: arena too small"):
        link.infer(1, 0)
    assert link.results()[1].tolist() == [30]
    assert peer.commands == ["infer 1 0", "name", "results"]
