"""The firmware's op resolver is generated from the model's own operators: exactly their Add calls, an
operator TFLM lacks named in one line before anything is built, and the op list in the image's build
folder. Where a TFLM checkout is at hand (TFLM_ROOT) the generated header is compiled with the real
arm-none-eabi-g++ against TFLM's own headers, the whole mapping table included; no library is needed."""

import re
import shutil
import subprocess

import pytest

from core.errors import HarnessError
from targets import firmware
from targets.op_resolver import TFLM_OPERATORS, model_operators, op_resolver_source, operators_key, write_op_resolver
from targets.qemu_an547 import QemuAn547Target
from tests.candidates import tflite_of


@pytest.fixture(scope="module")
def max_pool_tflite():
    import tensorflow as tf

    kernel = tf.constant(0.1, shape=(3, 3, 2, 4))
    return tflite_of(lambda x: tf.nn.max_pool2d(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME")), 2, 2, "VALID"),
                     (1, 8, 8, 2))


def _tflm_headers():
    root = firmware.tflm_checkout()
    if root is None or not (root / "tensorflow/lite/micro/micro_mutable_op_resolver.h").is_file():
        return None
    if shutil.which("arm-none-eabi-g++") is None:
        return None
    return root


def _compile(header_dir, root, tmp_path):
    """Compile a unit that registers the generated resolver's operators, as the firmware does."""
    unit = tmp_path / "unit.cc"
    unit.write_text('#include "model_ops.h"\nstatic ModelOpResolver resolver;\n'
                    "TfLiteStatus registered() { return register_model_operators(resolver); }\n")
    downloads = root / "tensorflow/lite/micro/tools/make/downloads"
    command = ["arm-none-eabi-g++", "-mcpu=cortex-m55", "-mfloat-abi=hard", "-mthumb", "-std=c++17", "-fno-rtti",
               "-fno-exceptions", "-DTF_LITE_STATIC_MEMORY", "-DNDEBUG", "-Werror", "-c", str(unit),
               "-o", str(tmp_path / "unit.o"), f"-I{header_dir}", f"-I{root}", f"-I{downloads / 'flatbuffers/include'}",
               f"-I{downloads / 'gemmlowp'}"]
    return subprocess.run(command, capture_output=True, text=True)


def test_the_resolver_holds_exactly_the_models_operators(max_pool_tflite, tmp_path):
    operators = model_operators(max_pool_tflite, "m.tflite")
    assert operators == ["CONV_2D", "MAX_POOL_2D"]  # sorted, each once; QUANTIZE/DEQUANTIZE absent: int8 in and out
    source = write_op_resolver(tmp_path, operators).read_text()
    assert "tflite::MicroMutableOpResolver<2>;" in source
    assert re.findall(r"resolver\.(Add\w+)\(\)", source) == ["AddConv2D", "AddMaxPool2D"]
    assert '#define MODEL_OPERATORS "CONV_2D,MAX_POOL_2D"' in source
    root = _tflm_headers()
    if root is not None:
        result = _compile(tmp_path, root, tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]


def test_custom_operators_map_by_their_code():
    source = op_resolver_source(["ethos-u", "TFLite_Detection_PostProcess"])
    assert re.findall(r"resolver\.(Add\w+)\(\)", source) == ["AddEthosU", "AddDetectionPostprocess"]
    assert "MicroMutableOpResolver<2>" in source


def test_every_method_of_the_mapping_table_exists_in_tflm(tmp_path):
    """One resolver with every operator of TFLM_OPERATORS compiles against TFLM's micro_mutable_op_resolver.h."""
    root = _tflm_headers()
    if root is None:
        pytest.skip("no TFLM checkout (TFLM_ROOT) or arm-none-eabi-g++: the table is checked against TFLM's headers")
    write_op_resolver(tmp_path, sorted(TFLM_OPERATORS))
    result = _compile(tmp_path, root, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_an_operator_tflm_lacks_is_one_line_before_anything_is_built(tmp_path):
    import tensorflow as tf

    model = tflite_of(lambda x: tf.math.atan2(x, x + 1.0), (1, 4), int8=False)  # ATAN2: no TFLM kernel
    with pytest.raises(HarnessError) as caught:
        model_operators(model, "m.tflite")
    assert str(caught.value) == ("m.tflite: TFLM has no kernel for operator ATAN2 (firmware op resolver); replace it "
                                 "with operators TFLM implements (targets/op_resolver.py: TFLM_OPERATORS)")
    target = QemuAn547Target(tflm_root=str(tmp_path / "no-tflm"))
    with pytest.raises(HarnessError, match=r"^m: TFLM has no kernel for operator ATAN2 \(firmware op resolver\)"):
        target.prepare(model, tmp_path / "work", "m")
    assert not (tmp_path / "work").exists()  # nothing written, nothing built


def test_the_op_list_is_in_the_images_build_folder(tmp_path):
    with_pool = firmware.image_build_dir(tmp_path, ["CONV_2D", "MAX_POOL_2D"])
    without = firmware.image_build_dir(tmp_path, ["CONV_2D"])
    assert with_pool != without and with_pool.parent == without.parent == tmp_path
    assert with_pool == firmware.image_build_dir(tmp_path, ["CONV_2D", "MAX_POOL_2D"])  # the same list, the same image
    assert operators_key(["CONV_2D", "MAX_POOL_2D"]) in with_pool.name
