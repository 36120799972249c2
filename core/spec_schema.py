"""The shape of ``spec.json`` before any of it is used: types, nesting and sizes, each problem one line
naming its JSON path (``$.layers[3].kernel``). ``core.candidate`` checks the meaning after this
(layer graph, shapes, weights).

Sizes are bounded so that a typo cannot ask for gigabytes: an input of at most 2048 x 2048 x 64,
at most 1,000 layers, kernels up to 31, strides up to 8, at most 8,192 output channels, and no
activation or weight tensor above 2^24 elements (16 MiB at int8; larger models do not fit an
Ethos-U55 system's SRAM or Flash).
"""

from __future__ import annotations

from core.errors import UsageError

MAX_INPUT = (2048, 2048, 64)
MAX_LAYERS = 1000
MAX_KERNEL, MAX_STRIDE, MAX_CHANNELS = 31, 8, 8192
MAX_TENSOR_ELEMENTS = 2 ** 24
NUMBER_KEYS = ("nonzero", "width", "range", "offset")


def check_structure(spec, where: str) -> None:
    """Raise UsageError at the first element of ``spec`` whose type, nesting or size is wrong."""

    def fail(path: str, expected: str, value) -> None:
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        raise UsageError(f"{where}: {path}: expected {expected}, got {shown[:60]}; fix the spec or regenerate it")

    def integer(path: str, value, low: int, high: int) -> None:
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            fail(path, f"an integer in {low}..{high}", value)

    if not isinstance(spec, dict):
        fail("$", "a JSON object with format, input_shape, num_classes and layers", spec)
    for key in ("format", "input_shape", "num_classes", "layers"):
        if key not in spec:
            fail(f"$.{key}", "a value (the key is missing)", None)
    if not isinstance(spec["format"], str):
        fail("$.format", "a string", spec["format"])
    if "name" in spec and not isinstance(spec["name"], str):
        fail("$.name", "a string", spec["name"])
    shape = spec["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3):
        fail("$.input_shape", "[H, W, C]", shape)
    for index, (value, high) in enumerate(zip(shape, MAX_INPUT)):
        integer(f"$.input_shape[{index}]", value, 1, high)
    integer("$.num_classes", spec["num_classes"], 1, MAX_CHANNELS)
    layers = spec["layers"]
    if not (isinstance(layers, list) and 1 <= len(layers) <= MAX_LAYERS):
        fail("$.layers", f"a list of 1..{MAX_LAYERS} layer objects", layers)
    if "meta" in spec and not isinstance(spec["meta"], dict):
        fail("$.meta", "an object", spec["meta"])
    for index, layer in enumerate(layers):
        path = f"$.layers[{index}]"
        if not isinstance(layer, dict):
            fail(path, "a layer object", layer)
        for key in ("name", "op", "input", "activation"):
            if key in layer and not isinstance(layer[key], str):
                fail(f"{path}.{key}", "a string", layer[key])
        if "inputs" in layer and not (isinstance(layer["inputs"], list)
                                      and all(isinstance(name, str) for name in layer["inputs"])):
            fail(f"{path}.inputs", "a list of layer names", layer["inputs"])
        for key, high in (("kernel", MAX_KERNEL), ("stride", MAX_STRIDE), ("out_channels", MAX_CHANNELS)):
            if key in layer:
                integer(f"{path}.{key}", layer[key], 1, high)
        for key in NUMBER_KEYS:
            value = layer.get(key, 0.0)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
                    and abs(value) != float("inf")):
                fail(f"{path}.{key}", "a finite number", value)


def check_tensor_size(where: str, layer: str, what: str, shape: tuple[int, ...]) -> None:
    elements = 1
    for dimension in shape:
        elements *= dimension
    if elements > MAX_TENSOR_ELEMENTS:
        raise UsageError(f"{where}: layer {layer}: its {what} {'x'.join(map(str, shape))} has {elements:,} elements, "
                         f"over the {MAX_TENSOR_ELEMENTS:,} an Ethos-U55 model can hold; shrink the layer or the input")
