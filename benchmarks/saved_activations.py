# SPDX-License-Identifier: Apache-2.0
"""Activation memory kept for backward, counted (not measured) on the meta device: no GPU and no memory needed.

Builds G and D at --size (stylegan2 configuration: channel_base 32768, channel_max 512, z/w 512, 8 mapping
layers) on the meta device, which runs the GPU's code path with the reference ops (the non-fused modulation of
GPU training, upfirdn3d and bias_act without plugins), and adds up the distinct storages autograd saves in each
training phase: Gmain (G and D forward on fakes), Gpl (G forward, then its gradient with create_graph: the
double-backward graph), Dr1 (D forward on reals, then the R1 gradient with create_graph). float32 throughout;
the reduced-precision blocks of GPU training halve their share.

    python benchmarks/saved_activations.py                  # 256x256x24, batch 1
    python benchmarks/saved_activations.py --size 32x32x32 --batch 2
    python benchmarks/saved_activations.py --fused          # with the fused modulation (the CPU's default)
"""

from __future__ import annotations

import click
import numpy as np
import torch

from common import print_table  # noqa: I001 (puts the repo on sys.path)
from training.networks import Discriminator, Generator
from volumes.contract import parse_size


class SavedBytes:
    """Context manager: the bytes of the distinct storages autograd saves inside it."""

    def __init__(self):
        self.storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        self.storages[storage._cdata] = storage.nbytes()  # _cdata: the storage itself (meta storages have no address).
        return t

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def count(size: str, batch: int, fused: bool = False, device: str = 'meta') -> list[dict]:
    shape = parse_size(size)
    net = dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None)
    with torch.device(device):
        G = Generator(z_dim=512, w_dim=512, c_dim=0, img_shape=shape, img_channels=1,
                      mapping_kwargs=dict(num_layers=8), synthesis_kwargs=net).train()
        D = Discriminator(c_dim=0, img_shape=shape, img_channels=1, epilogue_kwargs=dict(mbstd_group_size=batch),
                          **net).train()
        c = torch.zeros([batch, 0])
        rows = []
        with SavedBytes() as saved:
            D(G(torch.randn([batch, 512]), c, fused_modconv=fused or None), c)
        rows.append(dict(phase='Gmain', saved_mib=saved.mib))
        with SavedBytes() as saved:
            ws = G.mapping(torch.randn([batch, 512]), c)
            img = G.synthesis(ws, fused_modconv=fused or None)
            noise = torch.randn_like(img) / np.sqrt(np.prod(shape))
            torch.autograd.grad([(img * noise).sum()], [ws], create_graph=True)
        rows.append(dict(phase='Gpl', saved_mib=saved.mib))
        with SavedBytes() as saved:
            x = torch.randn([batch, 1, *shape]).requires_grad_(True)
            torch.autograd.grad([D(x, c).sum()], [x], create_graph=True)
        rows.append(dict(phase='Dr1', saved_mib=saved.mib))
    return rows


@click.command()
@click.option('--size', default='256x256x24', show_default=True, help='Volume size XxYxZ')
@click.option('--batch', default=1, show_default=True)
@click.option('--fused', is_flag=True, help='The fused (grouped-conv) modulation instead of the non-fused one')
def main(size: str, batch: int, fused: bool) -> None:
    rows = count(size, batch, fused)
    print(f'\nSaved for backward, {size}, batch {batch}, float32, GPU code path with the reference ops (meta device)'
          f'{", fused modulation" if fused else ""}\n')
    print_table(rows, ['phase', 'saved_mib'])


if __name__ == '__main__':
    main()
