"""The decision space read off a supernet: which decisions exist, their options, and the two orders the
searches depend on (the order fixes how a search consumes random numbers)."""

from search.decisions import OP_OPTIONS, DecisionSpace
from search.space import SearchableLayer, make_supernet


def _supernet():
    return make_supernet("mbv2", (28, 28, 1), 10, bit_options=[8, 4], nonzero_options=[1.0],
                         width_options=[1.0, 0.5])


def test_by_axis_lists_layers_then_width_groups_then_blocks():
    model = _supernet()
    keys = list(DecisionSpace.of(model).options)
    layers = [name for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)]
    width_keys = model.width_keys()
    groups = list(dict.fromkeys(width_keys[name] for name in layers if width_keys[name] is not None))
    expected = ([f"{name}:{axis}" for name in layers for axis in ("bits", "nonzero")]
                + [f"{group}:width" for group in groups] + [f"{block}:op" for block in model.blocks])
    assert keys == expected and model.blocks


def test_by_layer_puts_each_group_width_after_its_first_layer():
    model = _supernet()
    keys = list(DecisionSpace.of(model, by_layer=True).options)
    width_keys = model.width_keys()
    first = {}
    for name, layer in model.layers.items():
        if isinstance(layer, SearchableLayer) and width_keys[name] is not None:
            first.setdefault(width_keys[name], name)
    for group, name in first.items():
        assert keys.index(f"{group}:width") == keys.index(f"{name}:nonzero") + 1


def test_single_option_decisions_can_be_left_out_and_op_options_chosen():
    model = _supernet()
    space = DecisionSpace.of(model, single_options=False, op_options=(0.0, 1.0))
    assert not any(key.endswith(":nonzero") for key in space.options)  # nonzero has one option here
    assert all(space.options[f"{block}:op"] == (0.0, 1.0) for block in model.blocks)
    assert OP_OPTIONS == (1.0, 0.0)
    relaxed = space.relaxed()
    assert list(relaxed) == list(space.options) and relaxed[next(iter(relaxed))].options == (8, 4)
