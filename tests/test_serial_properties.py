"""Property-based tests of the serial link's parser (``SerialLink.read_line``/``wait_ready``/``command``)
against random byte streams: whatever arrives, in whatever pieces, a command returns exactly the lines
of its reply or raises ProtocolError; never another exception, never a line that is not its reply's,
and never a hang (the stream ends in silence or a closed link, as a real link does).

The expected outcome comes from ``reference_outcomes``, a simple reading of the protocol written here:
a line is the bytes before a newline, surrounding whitespace ignored; a non-empty line must be printable
ASCII; a line without an ``m-`` or ``e-`` prefix is the device's log, not part of the reply; a reply
ends at ``m-ready``; an ``e-`` line makes the reply an error; ``m-init-done`` anywhere in a line but at
boot is a reset. Likewise the figures: any ``m-results-int8`` line gives its int8 values or
ProtocolError (``reference_results``), and ``infer`` and ``profile`` report only numbers their lines
carry, or raise ProtocolError.
"""

import contextlib
import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from targets.serial_link import ProtocolError, SerialLink

ERROR = object()  # the outcome "raises ProtocolError"
WHITESPACE = bytes(code for code in range(128) if chr(code).isspace())
# bytes that make any line they land in break the protocol: neither printable ASCII nor whitespace
BAD_BYTES = bytes(code for code in range(256) if not (0x20 <= code <= 0x7e or code in WHITESPACE))


class Hung(Exception):
    """The link neither returned nor raised in time."""


@contextlib.contextmanager
def no_hang(seconds: float = 5.0):
    def expire(signum, frame):
        raise Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def link_over(chunks: list[bytes], closes: bool = False) -> tuple[SerialLink, list[bytes]]:
    """A link that reads ``chunks``, one per read, then silence (TimeoutError) or, with ``closes``, a
    closed link (b""); and the list its writes land in."""
    pending, written = list(chunks), []

    def read(size: int) -> bytes:
        if pending:
            chunk = pending.pop(0)
            assert 0 < len(chunk) <= size
            return chunk
        if closes:
            return b""
        raise TimeoutError

    return SerialLink(read, written.append, timeout_s=60.0, label="prop"), written


def split_at(data: bytes, cuts) -> list[bytes]:
    """``data`` in non-empty pieces, cut at the given offsets."""
    points = sorted({cut for cut in cuts if 0 < cut < len(data)})
    return [data[start:end] for start, end in zip([0, *points], [*points, len(data)]) if end > start]


def reference_lines(stream: bytes):
    """Each complete line of ``stream`` as the link must report it (text, or ERROR), then ERROR: what
    follows the last newline is never a line, and after it the stream is silent."""
    for raw in stream.split(b"\n")[:-1]:
        text = raw.strip(WHITESPACE)
        if not all(0x20 <= code <= 0x7e for code in text):
            yield ERROR
        else:
            yield text.decode("ascii")
    while True:
        yield ERROR


def reference_outcomes(stream: bytes, duties: list[str]) -> list:
    """The outcome of each step in ``duties`` (what it waits for: "boot" or a command's name) reading
    ``stream`` one after the other: its reply's lines, or ERROR, after which nothing more is read."""
    lines, outcomes = reference_lines(stream), []
    for during in duties:
        collected, failed = [], False
        for line in lines:
            if line is ERROR or ("m-init-done" in line and during != "boot"):
                collected = ERROR
                break
            if line and not line.startswith(("m-", "e-")):
                continue  # the device's log
            if line == "m-ready":
                break
            if line:
                failed = failed or line.startswith("e-")
                collected.append(line)
        outcome = ERROR if collected is ERROR or failed else collected
        outcomes.append(outcome)
        if outcome is ERROR:
            break
    return outcomes


def perform(link: SerialLink, duties: list[str]) -> list:
    """Run each step on ``link`` as the harness does; the same shape as ``reference_outcomes``."""
    outcomes = []
    for during in duties:
        try:
            outcomes.append(link.wait_ready("boot") if during == "boot" else link.command(during))
        except ProtocolError as error:
            assert "\n" not in str(error) and str(error).startswith("prop: ")
            outcomes.append(ERROR)
            break
    return outcomes


# a stream is lines of protocol words or noise, each ended one way or another, and maybe an unfinished tail
WORDS = [b"m-init-done", b"e-[oops]", b"e-[]", b"m-lap-us-5", b""]
ODD_WORDS = [b"m-name-dut-[x]", b"e-", b"m-", b" m-x\t", b"x", b"m-\x00", b"m-\xe9", b"\x1cm-y", b"[m-z"]
PIECES = [b"m-", b"e-", b"ready", b" ", b"\t", b"\r", b"\x1c", b"\x00", b"\x1b", b"\x7f", b"\xff", b"x", b"["]
noisy_lines = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=4).map(lambda b: b.replace(b"\n", b""))),
                       max_size=5).map(b"".join)
well_formed = st.one_of(st.just(b"m-ready"), st.sampled_from(WORDS))
stream_lines = st.one_of(well_formed, well_formed, well_formed, well_formed, st.sampled_from(ODD_WORDS), noisy_lines)
ends = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r\n\r\n", b"\r"])
streams = st.builds(lambda lines, tail: b"".join(line + end for line, end in lines) + tail,
                    st.lists(st.tuples(stream_lines, ends), max_size=12), st.sampled_from([b"", b"m-rea", b"\xff"]))
cuts = st.lists(st.integers(0, 400), max_size=12)
duty_lists = st.lists(st.sampled_from(["name", "infer", "results"]), min_size=1, max_size=3)


@settings(max_examples=200)
@given(greeting=st.sampled_from([b"", b"m-init-done\r\n", b"m-init-done\r\nm-ready\r\n"]), stream=streams, cut=cuts,
       boot=st.booleans(), duties=duty_lists, closes=st.booleans())
def test_any_byte_stream_gives_its_reply_lines_or_one_protocol_error(greeting, stream, cut, boot, duties, closes):
    """The stream may start as a booting target's does; read at boot, or as the reply to commands."""
    duties = ["boot", *duties] if boot else duties
    stream = greeting + stream
    link, written = link_over(split_at(stream, cut), closes)
    with no_hang():
        outcomes = perform(link, duties)
    assert outcomes == reference_outcomes(stream, duties)
    assert written == [f"{during}%".encode() for during in duties[:len(outcomes)] if during != "boot"]


printable = st.characters(min_codepoint=0x21, max_codepoint=0x7e)
reply_lines = st.lists(st.text(printable, max_size=16).map(lambda text: "m-" + text)
                       .filter(lambda line: line not in ("m-ready", "m-init-done")), max_size=6)
line_ends = st.sampled_from(["\r\n", "\n", " \r\n", "\r\n\r\n"])  # as sent, with stray blanks


@st.composite
def replies(draw) -> tuple[list[str], bytes]:
    """A well-formed reply: its lines, and its bytes ending with m-ready's line."""
    lines = draw(reply_lines)
    text = "".join(line + draw(line_ends) for line in lines) + "m-ready\r\n"
    return lines, text.encode("ascii")


@settings(max_examples=100)
@given(first=replies(), second=replies(), cut=cuts)
def test_well_formed_replies_in_any_pieces_give_exactly_their_lines_in_turn(first, second, cut):
    """Two replies in one stream, cut anywhere: each command gets its own lines, none of the other's."""
    link, _ = link_over(split_at(first[1] + second[1], cut))
    with no_hang():
        assert link.command("name") == first[0]
        assert link.command("name") == second[0]
        with pytest.raises(ProtocolError, match=r"^prop: no reply to 'name' within 60 s \(silent target\)$"):
            link.command("name")


@settings(max_examples=150)
@given(reply=replies(), data=st.data())
def test_a_reply_with_garbage_inside_is_an_error_and_garbage_after_it_is_never_a_line(reply, data):
    """Bytes that break the protocol, put anywhere before the reply's last newline, make the command
    fail; put after it, the command returns the reply's lines and the garbage fails the next one."""
    lines, stream = reply
    at = data.draw(st.integers(0, len(stream)), label="at")
    noise = data.draw(st.binary(max_size=8).map(lambda b: b.replace(b"\n", b"")), label="noise")
    bad = data.draw(st.sampled_from(list(BAD_BYTES)), label="bad")
    garbage = noise[:len(noise) // 2] + bytes([bad]) + noise[len(noise) // 2:]
    link, _ = link_over(split_at(stream[:at] + garbage + stream[at:], data.draw(cuts, label="cut")))
    with no_hang():
        if at < len(stream):
            with pytest.raises(ProtocolError):
                link.command("name")
        else:
            assert link.command("name") == lines
            with pytest.raises(ProtocolError):
                link.command("name")


def reference_results(body: str):
    """What ``m-results-int8-<body>`` must give: its int8 values, or ERROR."""
    if not (body.startswith("[") and body.endswith("]")):
        return ERROR
    values = []
    for text in body[1:-1].split(",") if body[1:-1] else []:
        digits = text[1:] if text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit()) or not -128 <= int(text) <= 127:
            return ERROR
        values.append(int(text))
    return values


result_values = st.one_of(st.integers(-300, 300).map(str), st.text("0123456789-. x", max_size=5))
result_bodies = st.one_of(st.lists(result_values, max_size=5).map(lambda values: f"[{','.join(values)}]"),
                          st.text("0123456789-,[] .x", max_size=24))


@settings(max_examples=150)
@given(body=result_bodies)
def test_any_results_line_gives_its_int8_values_or_one_protocol_error(body):
    link, _ = link_over([f"m-results-int8-{body}\r\nm-ready\r\n".encode("ascii")])
    expected = reference_results(body)
    if expected is ERROR:
        with pytest.raises(ProtocolError, match=r"^prop: 'results' (value|replied)"):
            link.results()
    else:
        _, values = link.results()
        assert values.dtype == np.int8 and values.tolist() == expected


figure_lines = st.lists(st.tuples(st.sampled_from(["m-instructions-", "m-lap-us-", "m-input-bytes-", "m-output-bytes-",
                                                   "m-arena-bytes-", "m-model-", "m-npu-idle-cycles-"]),
                                  st.text("0123456789-x[]", max_size=24)).map("".join), max_size=5)


@settings(max_examples=150)
@given(lines=figure_lines, step=st.sampled_from(["infer", "profile"]))
def test_any_figure_lines_give_figures_or_one_protocol_error(lines, step):
    """Whatever numbers, or not-numbers, follow the figure names, ``infer`` and ``profile`` return
    figures or raise ProtocolError; a figure they return is the number its line carries."""
    link, _ = link_over(["".join(line + "\r\n" for line in [*lines, "m-ready"]).encode("ascii")])
    try:
        figures = link.infer(1, 0).figures if step == "infer" else link.profile()
    except ProtocolError:
        return
    carried = {}  # figure name -> the numbers its lines carry, leading zeros dropped
    for line in lines:
        name, number = line[2:].rsplit("-", 1)
        carried.setdefault(name.replace("-", "_"), set()).add(number.lstrip("0") or "0")
    models = {line[len("m-model-["):-1] for line in lines if line.startswith("m-model-[") and line.endswith("]")}
    for name, value in figures.items():
        if step == "profile" and name == "model":
            assert value in models, (value, lines)
        else:
            assert str(value) in carried.get(name, set()), (name, value, lines)


INFER_REPLY = (b"m-warmup-start-1\r\nm-warmup-done\r\nm-infer-start-10\r\nm-lap-us-2500\r\nm-lap-us-2900\r\n"
               b"m-instructions-31000\r\nm-npu-active-cycles-700\r\nm-infer-done\r\nm-ready\r\n")
INFER_FIGURES = {"instructions": 31000, "npu_active_cycles": 700}


def test_a_reply_cut_at_every_pair_of_boundaries_parses_identically():
    """Every way of cutting the reply into up to three reads, and one byte per read, give the same figures."""
    size = len(INFER_REPLY)
    cut_sets = [[first, second] for first in range(size) for second in range(first, size)]
    cut_sets.append(list(range(size)))
    for cut in cut_sets:
        link, written = link_over(split_at(INFER_REPLY, cut))
        inference = link.infer(10, 1)
        assert inference.figures == INFER_FIGURES and inference.elapsed_us == 400, cut
        assert written == [b"infer 10 1%"]
