"""Every operator of the model reaches the firmware, and why a model cannot run reaches the host: TFLM
firmware on QEMU mps3-an547. Needs a TFLM checkout with its Cortex-M55 library (TFLM_ROOT; skips with
the reason otherwise, as in CI); slow (each case builds and boots an image).

``ArenaStarvedTarget`` and ``OpDroppingTarget`` are test doubles: they build the real firmware with an
arena smaller than the model needs, or with an op resolver that lacks one of the model's operators,
faults the harness itself never builds on purpose."""

import json
import re

import pytest

from harness.cli import main
from targets.qemu_an547 import QemuAn547Target
from targets.serial_link import ProtocolError
from tests.candidates import tflite_of

TARGET = QemuAn547Target()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(TARGET.available() is not None, reason=f"qemu-an547: {TARGET.available()}")]


@pytest.fixture(scope="module")
def max_pool_cnn():
    """A small int8 CNN with MAX_POOL_2D: conv, relu, max pool, conv, mean, dense."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    k1 = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 8)), tf.float32)
    k2 = tf.constant(rng.normal(0, 0.3, (3, 3, 8, 16)), tf.float32)
    dense = tf.constant(rng.normal(0, 0.3, (16, 10)), tf.float32)

    def cnn(x):
        x = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))
        x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        x = tf.nn.relu(tf.nn.conv2d(x, k2, 1, "SAME"))
        return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), dense)

    return tflite_of(cnn, (1, 16, 16, 3))


class ArenaStarvedTarget(QemuAn547Target):
    """Test double: the real firmware built with a 4 KiB arena, whatever the model needs (the model linked
    in: a run-time firmware has one arena for every model)."""

    def __init__(self, **options):
        super().__init__(model_loading="linked", **options)

    def build_image(self, tflite, workdir, label, arena_bytes):
        return super().build_image(tflite, workdir, label, 4096)


class OpDroppingTarget(QemuAn547Target):
    """Test double: the real firmware built with an op resolver lacking MAX_POOL_2D."""

    def firmware_operators(self, tflite, label):
        return [name for name in super().firmware_operators(tflite, label) if name != "MAX_POOL_2D"]


def test_a_cnn_with_max_pool_is_measured_bit_exact(max_pool_cnn, tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(max_pool_cnn)
    assert main(["measure", "--tflite", str(model), "--target", "qemu-an547", "--json",
                 "--out", str(tmp_path / "out")]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["bit_exact"] is True and record["instructions"] > 0 and record["tflm_arena_bytes"] > 0
    assert record["flash_breakdown"]["model"] > 0


def _failure(target, tflite, tmp_path) -> str:
    try:
        target.prepare(tflite, tmp_path, "m")
        with pytest.raises(ProtocolError) as caught:
            target.counters()
    finally:
        target.close()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_arena_exhaustion_is_named_with_tflms_own_words(max_pool_cnn, tmp_path):
    message = _failure(ArenaStarvedTarget(), max_pool_cnn, tmp_path)
    assert re.match(r"qemu-an547: 'infer' failed on the target: tensor arena exhausted: the model needs more than "
                    r"the firmware's 4096 bytes; TFLM: Failed to (allocate|resize) [a-z ]+\. Requested: \d+, "
                    r"available \d+, missing: \d+", message), message
    assert "operator" not in message


def test_a_missing_operator_is_named_with_tflms_own_words(max_pool_cnn, tmp_path):
    message = _failure(OpDroppingTarget(), max_pool_cnn, tmp_path)
    assert message.startswith("qemu-an547: 'infer' failed on the target: operator MAX_POOL_2D is missing from the "
                              "firmware's op resolver; TFLM: Didn't find op for builtin opcode 'MAX_POOL_2D'"), message
    assert "arena" not in message


def test_an_abort_inside_tflm_is_a_reply_not_a_silent_target(tmp_path):
    """TFLM's int8 SOFTMAX aborts (TFLITE_CHECK) on logits whose scale is below 2^-26: the firmware answers
    the pending command with the reason and ends the run, where TFLM alone would spin in silence."""
    import tensorflow as tf

    tiny = tflite_of(lambda x: tf.nn.softmax(tf.matmul(x, tf.constant(1e-9, shape=(4, 3)))), (1, 4))
    elf = TARGET.build_image(tiny, tmp_path, "tiny-logits", 64 * 1024)
    with TARGET.open_session(elf) as session:
        with pytest.raises(ProtocolError, match=r"^qemu-an547: 'profile' failed on the target: TFLM aborted "
                                                r"\(TFLITE_ABORT\); TFLM: no message$"):
            session.link.profile()
        assert session.process.wait(10) == 4
