"""SAM ViT attention through SDPA (relative positions as its mask) and FlexAttention (positions inside the kernel)
against segment-anything's own forward."""
from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from semisam_fast.backends import TorchBackend
from semisam_fast.errors import UserError
from semisam_fast.models import load_model
from semisam_fast.models.vit_attention import FlexAttention, SdpaAttention, attention_of, set_attention


def _attention(side: int, rel_pos: bool, dim: int = 64, heads: int = 4) -> Attention:
    torch.manual_seed(side)
    module = Attention(dim, heads, qkv_bias=True, use_rel_pos=rel_pos, input_size=(side, side)).eval()
    if rel_pos:  # segment-anything initialises them to zero, which would hide a wrong position term
        with torch.no_grad():
            module.rel_pos_h.normal_(0, 0.5)
            module.rel_pos_w.normal_(0, 0.5)
    return module


# 14: ViT-B's window; 16: a square global block; 8: without relative positions. FlexAttention's kernel is compiled
# for this CPU here (the GPU suite times it on CUDA).
@pytest.mark.parametrize("fused", [SdpaAttention, FlexAttention])
@pytest.mark.parametrize("side,rel_pos,batch", [(14, True, 3), (16, True, 1), (8, False, 2)])
def test_fused_attention_equals_segment_anythings(fused, side, rel_pos, batch):
    eager = _attention(side, rel_pos)
    x = torch.randn(batch, side, side, 64)
    with torch.inference_mode():
        torch.testing.assert_close(fused(eager)(x), eager(x), rtol=1e-5, atol=1e-5)


def test_sdpa_attention_has_segment_anythings_gradients():
    eager = _attention(6, True)
    fused = SdpaAttention(eager)
    x = torch.randn(2, 6, 6, 64)
    grads = []
    for module in (eager, fused):
        eager.zero_grad()
        module(x).square().sum().backward()
        grads.append({name: p.grad.clone() for name, p in eager.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5)


def test_torch_backend_runs_vit_attention_through_sdpa_with_the_same_embeddings():
    loaded = load_model("tiny")
    keys = set(loaded.encoder.state_dict())
    images = torch.rand(2, 3, 256, 256)
    eager = TorchBackend(loaded, attention="eager")
    assert eager.attention == "eager"
    reference = eager.encode(images)
    fused = TorchBackend(loaded)  # the default
    assert fused.attention == "sdpa" and fused.describe()["attention"] == "sdpa"
    assert eager.attention == "sdpa"  # one loaded model, one encoder: what runs is read from it, never stale
    assert sum(isinstance(m, SdpaAttention) for m in loaded.encoder.modules()) == 2
    assert set(loaded.encoder.state_dict()) == keys  # checkpoints load either way
    torch.testing.assert_close(fused.encode(images), reference, rtol=1e-4, atol=1e-5)
    assert set_attention(loaded.encoder, "flex") == 2
    assert attention_of(loaded.encoder) == "flex" and set(loaded.encoder.state_dict()) == keys
    torch.testing.assert_close(TorchBackend(loaded, attention="flex").encode(images), reference, rtol=1e-4, atol=1e-5)
    assert set_attention(loaded.encoder, "eager") == 2  # and back
    assert not any(isinstance(m, SdpaAttention) for m in loaded.encoder.modules())  # FlexAttention is one too
    assert TorchBackend(load_model("litemedsam")).attention == "model's own"  # TinyViT has no SAM ViT attention
    with pytest.raises(UserError, match="attention"):
        TorchBackend(loaded, attention="flash")
    with pytest.raises(UserError, match="for CUDA"):  # inductor cannot lower it on the CPU
        TorchBackend(loaded, attention="flex", compile=True)

