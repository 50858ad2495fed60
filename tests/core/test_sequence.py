import numpy as np
import pytest

from napari_any2reg.core.sequence import Sequence, SequenceError


def _frames(n=4, h=16, w=16, seed=0):
    return np.random.default_rng(seed).random((n, h, w)).astype(np.float32)


def test_valid_sequence_is_copied_and_read_only():
    data = _frames()
    seq = Sequence(data, timings_ms=[100, 200, 300, np.inf], spacing_mm=(1.4, 1.5), kind="STONE")
    assert seq.frames.dtype == np.float32 and seq.frames.shape == (4, 16, 16)
    assert seq.kind == "stone" and seq.spacing_mm == (1.4, 1.5)
    assert np.isinf(seq.timings_ms[-1])
    assert not seq.frames.flags.writeable
    data[0, 0, 0] = 99.0  # the caller's array is not aliased
    assert seq.frames[0, 0, 0] != 99.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"frames": np.zeros((16, 16))}, "3-D"),
        ({"frames": np.random.rand(1, 16, 16)}, "at least 2 frames"),
        ({"frames": np.random.rand(3, 4, 4)}, "too small"),
        ({"frames": np.full((3, 16, 16), 2.0)}, "constant"),
        ({"frames": np.random.rand(3, 16, 16) + 1j}, "complex"),
        ({"frames": _frames(), "timings_ms": [1, 2, 3]}, "3 timings given for 4 frames"),
        ({"frames": _frames(), "spacing_mm": (0.0, 1.0)}, "positive"),
        ({"frames": _frames(), "kind": "t2star-foo"}, "Unknown sequence kind"),
    ],
)
def test_invalid_sequences_raise_clear_errors(kwargs, match):
    with pytest.raises(SequenceError, match=match):
        Sequence(**kwargs)


def test_nan_frames_are_named():
    data = _frames()
    data[2, 3, 3] = np.nan
    with pytest.raises(SequenceError, match=r"frames \[2\] contain NaN"):
        Sequence(data)


def test_single_constant_frame_is_named():
    data = _frames()
    data[1] = 5.0
    with pytest.raises(SequenceError, match=r"frames \[1\] are constant"):
        Sequence(data)


def test_permuted_and_layer_round_trip():
    seq = Sequence(_frames(), timings_ms=[4, 3, 2, 1], spacing_mm=(2.0, 1.0), kind="molli", name="x")
    order = np.array([3, 2, 1, 0])
    p = seq.permuted(order)
    np.testing.assert_array_equal(p.frames, seq.frames[order])
    np.testing.assert_array_equal(p.timings_ms, [1, 2, 3, 4])
    # the napari side of a sequence lives in widgets (core carries no napari conventions)
    from napari_any2reg.widgets._layers import sequence_from_layer, sequence_layer_metadata

    back = sequence_from_layer(seq.frames, name="x", scale=(1, 2.0, 1.0), metadata=sequence_layer_metadata(seq))
    assert back.kind == "molli" and back.spacing_mm == (2.0, 1.0)
    np.testing.assert_array_equal(back.timings_ms, seq.timings_ms)
    with pytest.raises(SequenceError, match="3-D"):
        sequence_from_layer(np.zeros((16, 16)), name="single")
    # spacing from the layer's scale when the metadata does not say
    assert sequence_from_layer(seq.frames, scale=(1, 3.0, 0.5)).spacing_mm == (3.0, 0.5)
