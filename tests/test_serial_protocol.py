"""Faults on the serial link, each detected and reported in one line. ``FaultInjectingPeer`` is a test
double: a thread playing a misbehaving target over a socket pair, for the faults real firmware does
not produce on demand."""

import socket
import threading

import numpy as np
import pytest

from targets.serial_link import ProtocolError, SerialLink
from tests.faulty_peer import received_commands


class FaultInjectingPeer:
    """Test double of a target: answers each command with the scripted bytes (None: stay silent)."""

    def __init__(self, replies: dict[str, list[bytes] | None]):
        self.host, self.device = socket.socketpair()
        self.replies = replies
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        for command in received_commands(self.device.recv):
            reply = self.replies.get(command.split(" ")[0])
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


def test_results_parse_into_scores_and_int8():
    peer = FaultInjectingPeer({"results": [b"m-results-[-1.280,0.000,0.050,1.270]\r\n"
                                           b"m-results-int8-[-128,0,5,127]\r\nm-ready\r\n"]})
    scores, int8 = peer.link().results()
    np.testing.assert_array_equal(int8, np.array([-128, 0, 5, 127], np.int8))
    np.testing.assert_array_equal(scores, [-1.28, 0.0, 0.05, 1.27])


def test_a_reference_devices_float_results_and_log_lines_are_read():
    """MLPerf Tiny's reference firmware prints %0.3f scores, no int8 line, and unprefixed log lines."""
    peer = FaultInjectingPeer({"infer": [b"Input db has 490 elemented\n m-warmup-start-0\r\nm-lap-us-100\r\n"
                                         b"m-lap-us-2600\r\nm-infer-done\r\nm-results-[0.102,0.898]\r\nm-ready\r\n"],
                               "results": [b"debug: hello\r\nm-results-[0.102,0.898]\r\nm-ready\r\n"]})
    link = peer.link()
    scores, int8 = link.results()
    assert int8 is None and scores.tolist() == [0.102, 0.898] and link.reply_log == ["debug: hello"]
    assert list(link.log) == ["debug: hello"]


@pytest.mark.parametrize("replies,message", [
    ({"name": [b"m-name-dut-[\xff\xfe]\r\nm-ready\r\n"]}, "garbled bytes on the link"),
    ({"name": [b"\x07\x1bxx\r\nm-ready\r\n"]}, "garbled bytes on the link"),
    ({"name": None}, "no reply to 'name' within 0.5 s"),
    ({"name": "close"}, "link closed mid-reply"),
    ({"name": [b"m-init-done\r\nm-ready\r\n"]}, "the target reset during 'name'"),
    ({"infer": [b"m-warmup-start-1\r\ne-[arena too small]\r\nm-ready\r\n"]}, "'infer' failed on the target: arena too small"),
    ({"infer": [b"m-lap-us-12x\r\nm-ready\r\n"]}, "'infer' replied a malformed timestamp: 'm-lap-us-12x'"),
    ({"infer": [b"m-lap-us-900\r\nm-lap-us-800\r\nm-ready\r\n"]}, "timestamps that run backwards: 900 then 800"),
    ({"infer": [b"m-instructions-12x\r\nm-infer-done\r\nm-ready\r\n"]}, "'infer' replied a malformed count"),
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


def scripted_link(stream: bytes, timeout_s: float = 0.5) -> SerialLink:
    """A link reading ``stream`` in one piece; silence (TimeoutError) once it is used up."""
    pending = [stream]

    def read(size):
        if not pending:
            raise TimeoutError
        return pending.pop()

    return SerialLink(read, lambda data: None, timeout_s, label="test-target")


def test_profile_reads_the_model_name_and_its_three_sizes():
    peer = FaultInjectingPeer({"profile": [
        b"m-profile-[udc-harness benchmark core]\r\nm-model-[hand-b4-s50]\r\nm-input-bytes-784\r\n"
        b"m-output-bytes-10\r\nm-arena-bytes-5120\r\nm-ready\r\n"]})
    assert peer.link().profile() == {"profile": "udc-harness benchmark core", "model": "hand-b4-s50", "input_bytes": 784,
                                     "output_bytes": 10, "arena_bytes": 5120}


@pytest.mark.parametrize("line,message", [
    (b"m-input-bytes-7x4", r"'profile' replied a malformed size line: 'm-input-bytes-7x4'"),
    (b"m-arena-bytes-", r"'profile' replied a malformed size line: 'm-arena-bytes-'"),
    (b"m-model-[hand", r"'profile' replied a malformed model line: 'm-model-\[hand'"),
])
def test_a_malformed_profile_line_is_a_one_line_error(line, message):
    peer = FaultInjectingPeer({"profile": [b"m-model-[x]\r\n" + line + b"\r\nm-ready\r\n"]})
    with pytest.raises(ProtocolError, match=f"^test-target: {message}$"):
        peer.link().profile()


def test_infer_names_each_counter_and_skips_the_warmup_and_start_lines():
    peer = FaultInjectingPeer({"infer": [
        b"m-warmup-start-1\r\nm-warmup-done\r\nm-infer-start-10\r\nm-lap-us-2500\r\nm-lap-us-4100\r\n"
        b"m-instructions-31000\r\nm-npu-active-cycles-700\r\nm-axi0-read-beats-12\r\nm-infer-done\r\n"
        b"m-results-[0.500]\r\nm-results-int8-[5]\r\nm-ready\r\n"]})
    inference = peer.link().infer(10, 1)
    assert inference.figures == {"instructions": 31000, "npu_active_cycles": 700, "axi0_read_beats": 12}
    assert inference.elapsed_us == 1600 and inference.int8.tolist() == [5] and inference.scores.tolist() == [0.5]


def test_an_error_reply_is_raised_after_its_m_ready_and_the_first_error_is_named():
    """The m-ready after e-[...] is consumed before raising, so the next command reads its own reply."""
    peer = FaultInjectingPeer({"infer": [b"m-warmup-start-0\r\ne-[arena too small]\r\ne-[later]\r\nm-ready\r\n"],
                               "name": [b"m-name-dut-[board]\r\nm-ready\r\n"]})
    link = peer.link()
    with pytest.raises(ProtocolError, match=r"^test-target: 'infer' failed on the target: arena too small$"):
        link.infer(1, 0)
    assert link.command("name") == ["m-name-dut-[board]"]


def test_m_init_done_is_a_boot_line_at_boot_and_a_reset_during_any_command():
    assert scripted_link(b"m-init-done\r\nm-ready\r\n").wait_ready("boot") == ["m-init-done"]
    with pytest.raises(ProtocolError, match=r"^test-target: the target reset during 'infer'$"):
        scripted_link(b"m-warmup-start-0\r\nm-init-done\r\nm-ready\r\n").infer(1, 0)
    peer = FaultInjectingPeer({"db": [b"m-[Expecting 4 bytes]\r\nm-init-done\r\nm-ready\r\n"]})
    with pytest.raises(ProtocolError, match=r"^test-target: the target reset during 'db'$"):
        peer.link().load_input(b"\x00\x01\x02\x03")


def test_an_input_the_target_never_reports_loaded_is_a_one_line_error():
    peer = FaultInjectingPeer({"db": [b"m-[Expecting 4 bytes]\r\nm-ready\r\n"]})
    with pytest.raises(ProtocolError, match=r"^test-target: the last 'db' chunk of 4 bytes was not answered "
                                            r"m-load-done$"):
        peer.link().load_input(b"\x00\x01\x02\x03")


@pytest.mark.parametrize("line,message", [
    (b"m-results-int8-[1,200,3]", r"'results' value 200 is outside int8's -128..127"),
    (b"m-results-int8-[-129]", r"'results' value -129 is outside int8's -128..127"),
    (b"m-results-int8-[" + b"9" * 5000 + b"]", r"'results' value 9{20} is outside int8's -128..127"),
    (b"m-results-int8-[1,x,3]", r"'results' value 'x' is not an integer"),
    (b"m-results-int8-[1,2.5]", r"'results' value '2.5' is not an integer"),
    (b"m-results-int8-[1,,3]", r"'results' value '' is not an integer"),
    (b"m-results-int8-[1, 2]", r"'results' value ' 2' is not an integer"),
    (b"m-results-int8-[1,2", r"'results' replied a malformed line: 'm-results-int8-\[1,2'"),
    (b"m-results-[0.1,nan]", r"'results' value 'nan' is not a number"),
    (b"m-results-[0.1,1e999]", r"'results' value '1e999' is not a number"),
    (b"m-results-[0.-1-2-3]", r"'results' value '0.-1-2-3' is not a number"),
    (b"m-results-[0.5,0.5]\r\nm-results-int8-[1]", r"'results' replied 2 scores but 1 int8 values"),
    (b"m-other-[1]", r"'results' replied without an m-results line"),
])
def test_a_malformed_result_is_a_one_line_error_naming_the_value(line, message):
    peer = FaultInjectingPeer({"results": [line + b"\r\nm-ready\r\n"]})
    with pytest.raises(ProtocolError, match=f"^test-target: {message}$"):
        peer.link().results()


def test_an_error_reply_without_a_reason_still_fails_the_command():
    peer = FaultInjectingPeer({"infer": [b"e-[]\r\nm-ready\r\n"]})
    with pytest.raises(ProtocolError, match=r"^test-target: 'infer' failed on the target: no reason given$"):
        peer.link().infer(1, 0)


@pytest.mark.parametrize("command,reply,message", [
    ("infer", b"m-instructions-" + b"9" * 5000, r"'infer' replied a malformed count: 'm-instructions-9{45}'"),
    ("profile", b"m-input-bytes-" + b"9" * 5000, r"'profile' replied a malformed size line: 'm-input-bytes-9{46}'"),
])
def test_a_number_longer_than_any_counter_is_a_one_line_error(command, reply, message):
    """A uint64 counter has at most 20 digits; thousands of digits are a broken reply, not a figure."""
    link = scripted_link(reply + b"\r\nm-ready\r\n")
    with pytest.raises(ProtocolError, match=f"^test-target: {message}$"):
        link.infer(1, 0) if command == "infer" else link.profile()
