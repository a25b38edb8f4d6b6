"""The PyTorch side of recipe's training benchmark: the same models, batch sizes and thread
counts as bench-train, on the CPU, with the same init scheme (Kaiming-normal weights,
uniform biases, as candle-nn's linear and conv2d; nanoGPT's for the GPT) and AdamW at 3e-4.

Usage: python torch_bench.py THREADS
Prints one JSON object: steps per second for each row, and peak RSS in MiB.
"""
import json
import resource
import sys
import time

import torch

threads = int(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)


def init(module):
    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            bound = 1 / m.weight.shape[1] ** 0.5
            torch.nn.init.uniform_(m.bias, -bound, bound)
    return module


def mlp():
    return init(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)))


def convnet():
    # The runtime's ConvNet { channels: [32, 64], hidden: 128 } on 28x28: conv 1->32, ReLU,
    # 2x2 max-pool, conv 32->64, ReLU, 2x2 max-pool, dense 64*7*7 -> 128, ReLU, dense -> 10.
    return init(torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)))


class Block(torch.nn.Module):
    # nanoGPT's block: pre-norm causal self-attention (scaled_dot_product_attention, as
    # nanoGPT calls it) and a 4x MLP with GELU (tanh approximation, as candle's gelu).
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv, self.proj = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.fc, self.out = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt(torch.nn.Module):
    # The runtime's ModelSpec::Gpt { width: 128, heads: 4, layers: 4 } over context 64 and
    # vocabulary 65, with nanoGPT's init: N(0, 0.02), residual projections N(0, 0.02 /
    # sqrt(2 * layers)), biases 0.
    def __init__(self, vocab=65, context=64, width=128, heads=4, layers=4):
        super().__init__()
        self.token, self.position = torch.nn.Embedding(vocab, width), torch.nn.Embedding(context, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f, self.head = torch.nn.LayerNorm(width), torch.nn.Linear(width, vocab)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                torch.nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / (2 * layers) ** 0.5 if name.endswith(("proj.weight", "out.weight")) else 0.02
                torch.nn.init.normal_(p, 0.0, std)

    def forward(self, ids):
        x = self.token(ids) + self.position(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def steps_per_second(model, batch, seconds, train=True, tokens=False):
    if tokens:
        x = torch.randint(0, 65, (batch, 64))
        y = torch.randint(0, 65, (batch, 64))
    else:
        x = torch.rand(batch, 1, 28, 28)
        y = torch.randint(0, 10, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        if train:
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss_fn(out.view(-1, out.shape[-1]), y.view(-1)).backward()
            opt.step()
        else:
            with torch.no_grad():
                model(x)

    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


rows = {
    "mlp_train_b64": steps_per_second(mlp(), 64, 2.0),
    "mlp_train_b256": steps_per_second(mlp(), 256, 2.0),
    "mlp_forward_b64": steps_per_second(mlp(), 64, 1.0, train=False),
    "convnet_train_b64": steps_per_second(convnet(), 64, 3.0),
    "gpt_train_b32": steps_per_second(Gpt(), 32, 4.0, tokens=True),
}
print(json.dumps({"rows": rows, "torch": torch.__version__, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
