"""The PyTorch side of recipe's training benchmark: the same models, batch sizes and thread
counts as bench-train, on the CPU, with the same init scheme (Kaiming-normal weights,
uniform biases, as candle-nn's linear and conv2d) and AdamW at 3e-4.

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


def steps_per_second(model, batch, seconds, train=True):
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        if train:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
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
}
print(json.dumps({"rows": rows, "torch": torch.__version__, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
