"""thinkjepa.cache_schema.fastcopy: converting copies in pieces give exactly what one copy gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thinkjepa.cache_schema.fastcopy import PIECE, copy_array, copy_serial


@pytest.mark.parametrize("shape", [(7,), (PIECE * 2 + 5,), (3, 40, 2048), (2, 3, 50000), (5, PIECE + 1)])
def test_copy_serial_equals_one_copy_for_transposed_sources(shape):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(*shape[::-1], generator=g).to(torch.bfloat16).permute(*range(len(shape) - 1, -1, -1))
    want = src.to(torch.float32)
    dst = torch.full(shape, float("nan"))
    copy_serial(dst, src)
    assert torch.equal(dst, want)


def test_copy_serial_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"copy of shape \(3,\) into \(4,\)"):
        copy_serial(torch.empty(4), torch.empty(3))


def test_copy_array_reads_read_only_sources_and_reinterprets_bits():
    x = np.random.default_rng(0).standard_normal((4, PIECE)).astype(np.float32)
    ro = np.frombuffer(x.astype(np.float16).tobytes(), dtype=np.float16).reshape(x.shape)
    out = np.empty(x.shape, np.float32)
    copy_array(out, ro)
    np.testing.assert_array_equal(out, x.astype(np.float16).astype(np.float32))
    bits = np.empty(x.shape, np.uint16)
    copy_array(bits, x, dst_torch_dtype="bfloat16")
    back = np.empty(x.shape, np.float32)
    copy_array(back, bits, src_torch_dtype="bfloat16")
    assert np.abs(back - x).max() <= np.abs(x).max() * 2 ** -8
