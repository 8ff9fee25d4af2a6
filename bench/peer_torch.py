"""The PyTorch + lightly peer of our SimCLR step and training loop (a benchmark, not a dependency).

Run it with an interpreter that has torch, torchvision and lightly, in a virtual environment
outside this repository, e.g.

    python3 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 lightly==1.6.0
    /work/peer-venv/bin/python bench/peer_torch.py --mode=step --batch_size=128 --steps=3
    /work/peer-venv/bin/python bench/peer_torch.py --mode=loop --width=0.25 --batch_size=256 \
        --cifar_dir=../shared/data/cifar10/train --steps=30

bench/train_step.py and bench/train_loop.py start it as a subprocess (`--peer_python`) and
interleave its timings with ours. `--serve` keeps one process alive and answers each line
`N` on stdin with one JSON line {"seconds": [...]} (per-step seconds of N more steps), so the
comparison can alternate ours and the peer's without paying the start-up again. `--mode=blocks`
times the residual blocks bench/blocks.py lists, each alone.

The same network and recipe as ours (simclr_jax/models, core/losses.py, core/optim.py): ResNet-18
v1 with the CIFAR stem (3x3/1 conv, no max-pool) at the chosen width, no conv bias, zero-init gamma
of each block's last BN, a projection shortcut (1x1 conv + BN) on the first block of every stage,
stage 1 included (the official code's rule, ours by default: `config.shortcut='every_group'`); a
projection head of `--proj_layers` layers (Linear without bias + BN + ReLU each, then Linear + BN
without beta, out 128; 2 as our base config, bench/train_loop.py passes the CIFAR config's 3); the
online linear probe on detached h; lightly's NTXentLoss (the mean over all 2N anchors, as ours);
lightly's LARS (momentum 0.9, trust 0.001, weight decay 1e-6 on the kernels only: BN parameters,
biases and the probe in a group without decay, which lightly's LARS also excludes from the trust
ratio); channels-last memory. `step` mode feeds float views (the augmentation is the data loader's
job in PyTorch); `loop` mode trains from the image folder with lightly's SimCLRTransform (random
resized crop, flip, colour jitter p=0.8 at strength 0.5, greyscale p=0.2, no blur, no
normalisation: the CIFAR recipe) in DataLoader worker processes.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.utils.lars import LARS


def scaled(width: int, multiplier: float) -> int:
    return max(1, int(round(width * multiplier)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, projection: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = None
        if projection:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class SimCLR(nn.Module):
    """ResNet-18 (CIFAR stem) -> h; `proj_layers`-layer head -> z; probe on detached h."""

    def __init__(self, width: float, proj_layers: int = 2, out_dim: int = 128,
                 num_classes: int = 10):
        super().__init__()
        stem = scaled(64, width)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(stem, eps=1e-5, momentum=0.1), nn.ReLU())
        blocks, cin = [], stem
        for stage in range(4):
            cout = scaled(64 * 2**stage, width)
            for b in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1, b == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        hidden = [m for _ in range(proj_layers - 1)
                  for m in (nn.Linear(cin, cin, bias=False), nn.BatchNorm1d(cin), nn.ReLU())]
        self.head = nn.Sequential(*hidden, nn.Linear(cin, out_dim, bias=False),
                                  nn.BatchNorm1d(out_dim, affine=True))
        self.head[-1].bias.requires_grad_(False)  # the last BN has no centre (beta)
        self.probe = nn.Linear(cin, num_classes)

    def forward(self, x):
        h = self.blocks(self.stem(x)).mean(dim=(2, 3))
        return self.head(h), self.probe(h.detach())


def build(width: float, lr: float, proj_layers: int = 2):
    model = SimCLR(width, proj_layers).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters()
             if p.requires_grad and p.ndim > 1 and not n.startswith("probe")]
    rest = [p for n, p in model.named_parameters()
            if p.requires_grad and not (p.ndim > 1 and not n.startswith("probe"))]
    opt = LARS([{"params": decay, "weight_decay": 1e-6}, {"params": rest, "weight_decay": 0.0}],
               lr=lr, momentum=0.9, trust_coefficient=0.001)
    return model, opt, NTXentLoss(temperature=0.5)


def train_step(model, opt, loss_fn, v1, v2, labels) -> float:
    x = torch.cat([v1, v2]).contiguous(memory_format=torch.channels_last)
    z, logits = model(x)
    n = v1.shape[0]
    loss = loss_fn(z[:n], z[n:])
    total = loss + F.cross_entropy(logits, torch.cat([labels, labels]))
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return loss.item()  # a host sync per step, as a training loop logging the loss does


def random_batches(batch: int, size: int):
    g = torch.Generator().manual_seed(0)
    v1 = torch.randint(0, 256, (batch, 3, size, size), generator=g).float() / 255
    v2 = torch.randint(0, 256, (batch, 3, size, size), generator=g).float() / 255
    labels = torch.randint(0, 10, (batch,), generator=g)
    while True:
        yield v1, v2, labels


def folder_batches(root: str, batch: int, size: int, workers: int):
    from lightly.transforms import SimCLRTransform
    from torchvision.datasets import ImageFolder

    transform = SimCLRTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0,
                                normalize=None)
    data = ImageFolder(root, transform=transform)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    while True:
        for (v1, v2), labels in loader:
            yield v1, v2, labels


def run_steps(model, opt, loss_fn, batches, n: int) -> list[float]:
    """Per-step seconds of n steps, input wait included (the loop's real cost)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        v1, v2, labels = next(batches)
        train_step(model, opt, loss_fn, v1, v2, labels)
        times.append(time.perf_counter() - t)
    return times


def time_blocks(specs: list, views: int, calls: int) -> dict[str, list[float]]:
    """bench/blocks.py's peer side: {name: [forward ms, forward + backward ms]} of each block
    (name, input H, input channels, channels, stride) of `specs` (bench/blocks.py's list; a
    first block, named '.../stride', has the projection), best of `calls` after one warm-up."""
    out = {}
    for name, h, cin, c, stride in specs:
        block = BasicBlock(cin, c, stride, projection=name.endswith(f"/{stride}"))
        block = block.to(memory_format=torch.channels_last)
        x0 = torch.randn(views, cin, h, h).contiguous(memory_format=torch.channels_last)

        def forward(block=block, x0=x0):
            with torch.no_grad():
                block(x0)

        def both(block=block, x0=x0):
            x = x0.clone().requires_grad_(True)
            (block(x) ** 2).sum().backward()

        best = []
        for fn in (forward, both):
            fn()
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            best.append(min(times) * 1e3)
        out[name] = best
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("step", "loop", "blocks"), default="step")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--proj_layers", type=int, default=2,
                   help="projection head layers (ours: config.num_proj_layers)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--blocks", default="[]", help="--mode=blocks: bench/blocks.py's JSON list")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cifar_dir", default="")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (loop)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--serve", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.mode == "blocks":
        print(json.dumps({"blocks": time_blocks(json.loads(a.blocks), a.batch_size, a.steps)}))
        return
    model, opt, loss_fn = build(a.width, lr=1.0 * a.batch_size / 256, proj_layers=a.proj_layers)
    model.train()
    batches = (folder_batches(a.cifar_dir, a.batch_size, a.image_size, a.workers)
               if a.mode == "loop" else random_batches(a.batch_size, a.image_size))
    run_steps(model, opt, loss_fn, batches, a.warmup)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "mode": a.mode,
            "width": a.width, "batch_size": a.batch_size}
    if a.serve:
        print(json.dumps({"ready": info}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                break
            print(json.dumps({"seconds": run_steps(model, opt, loss_fn, batches,
                                                   int(line))}), flush=True)
        return
    times = run_steps(model, opt, loss_fn, batches, a.steps)
    views = 2 * a.batch_size
    info["images_per_sec"] = a.batch_size * len(times) / sum(times)  # throughput, stalls too
    info["step_seconds"] = times
    print(json.dumps(info))
    print(f"peer {a.mode}: best {min(times) * 1e3:.1f} ms, median "
          f"{statistics.median(times) * 1e3:.1f} ms per step = {views / min(times):.1f} / "
          f"{views / statistics.median(times):.1f} views/s "
          f"({a.batch_size / statistics.median(times):.1f} images/s median)")


if __name__ == "__main__":
    main()
