"""BatchNorm over the global batch of a torchrun launch: a run's result then does not depend on how many processes
share its batch (the 3D V-Net's per-process batch is 1 or 2 volumes, too few for batch statistics of their own).

On GPUs this is torch's `SyncBatchNorm`. torch's refuses CPU tensors, so on the CPU (gloo) `GlobalBatchNorm` does
the same computation: per-channel sums all-reduced with gradients (`distributed.global_sum`), two passes (mean,
then the squared deviations) so the variance keeps its precision: two all-reduces per layer forward, two backward."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..distributed import global_sum


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm{1,2,3}d whose training statistics are over all processes; plain BatchNorm in eval mode or alone.
    Its state dict is a BatchNorm's, so checkpoints load into the plain network."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least a 2D input (got {input.dim()}D)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and torch.distributed.is_available() and torch.distributed.is_initialized()):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, channels] + [1] * (x.dim() - 2)
        sums = global_sum(torch.cat([x.sum(dims), x.new_tensor([x.numel() // channels])]))  # one all-reduce
        count = sums[-1]
        mean = sums[:-1] / count
        centred = x - mean.view(shape)
        var = global_sum((centred * centred).sum(dims)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * count / (count - 1), alpha=momentum)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(net: nn.Module, device: str) -> nn.Module:
    """Every BatchNorm of `net` made global over the launch's processes (torch's SyncBatchNorm on CUDA)."""
    if str(device).startswith("cuda"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return _convert(net)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module
