"""The notebook's network as a plain PyTorch training loop on the CPU; one JSON line.

Runs in benchmarks/.venv-torch (`pip install torch==2.13.0`), which `run_all.py` creates. The
same network, initialisation (Glorot uniform, zero biases), Adam settings (lr 1e-3,
epsilon 1e-7) and loss as Keras: sparse cross-entropy on the sigmoid outputs normalised to
sum to 1, clipped at 1e-7. An eager loop: shuffle, slice, forward, backward, step.

    benchmarks/.venv-torch/bin/python benchmarks/bench_torch.py --data benchmarks/out/mnist.npz
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
args = parser.parse_args()
torch.manual_seed(args.seed)

with np.load(args.data) as f:
    x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
device = torch.device(args.device)
x = torch.from_numpy(x_train.reshape(-1, 784).astype(np.float32) / np.float32(255)).to(device)
y = torch.from_numpy(y_train.astype(np.int64)).to(device)
x_test_t = torch.from_numpy(x_test.reshape(-1, 784).astype(np.float32) / np.float32(255))

model = nn.Sequential(
    nn.Linear(784, 100), nn.Sigmoid(),
    nn.Linear(100, 100), nn.ReLU(), nn.Dropout(0.2),
    nn.Linear(100, 100), nn.ReLU(), nn.Dropout(0.2),
    nn.Linear(100, 10), nn.Sigmoid(),
)  # fmt: skip
for layer in model:
    if isinstance(layer, nn.Linear):
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
model.to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)


def keras_sparse_crossentropy(outputs, labels):
    probabilities = outputs / outputs.sum(dim=1, keepdim=True)
    probabilities = probabilities.clamp(1e-7, 1 - 1e-7)
    return nn.functional.nll_loss(probabilities.log(), labels)


seconds = []
for epoch in range(args.epochs):
    start = time.perf_counter()
    model.train()
    order = torch.randperm(len(x), device=device)
    total, correct = 0.0, 0
    for i in range(0, len(x), 32):
        index = order[i : i + 32]
        outputs = model(x[index])
        loss = keras_sparse_crossentropy(outputs, y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
        correct += (outputs.argmax(1) == y[index]).sum().item()
    seconds.append(time.perf_counter() - start)
    print(f"epoch {epoch + 1}: loss {total / len(x):.4f} accuracy {correct / len(x):.4f}")

model.eval()
with torch.no_grad():
    accuracy = (model(x_test_t.to(device)).argmax(1).cpu().numpy() == y_test).mean()

json.dump(
    {
        "epoch_seconds": seconds,
        "steady_epoch_s": statistics.median(seconds[2:]),
        "test_accuracy": float(accuracy),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "process_s": time.perf_counter() - START,
        "versions": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": args.device,
        },
        "load_average": os.getloadavg(),
    },
    sys.stdout,
)
print()
