"""laplace-torch's first call on the two-moons workload, in a fresh process (issue 14, must-show 2).

The peer of ``python -m ppl_dgp.benchmarks.coldstart --cases laplace_moons``: the same arrays
(``ppl_dgp/data/moons.npz``), MLP 2-32-2 (tanh; laplace-torch's classification takes class
logits: one output more than ppl_dgp's one-logit net), MAP by Adam (lr 1e-2, full batch, 3000
steps on mean cross-entropy + lambda/(2N) |theta|^2, lambda = 1), then, timed, laplace-torch's
first ``Laplace(...)`` + ``fit`` + ``optimize_prior_precision(method="marglik")`` (``fit_seconds``)
and the probit predictive at the 1000 test points (``predict_seconds``). Every variant runs
in its own process, so each figure is a first call. Needs torch and laplace-torch (not
dependencies of ppl_dgp), in a separate environment:

    python3.12 -m venv /tmp/lt && /tmp/lt/bin/pip install laplace-torch
    OMP_NUM_THREADS=1 taskset -c 1 /tmp/lt/bin/python .bench/laplace_torch_peer.py

Prints one JSON object per variant.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = (("last_layer", "kron"), ("last_layer", "full"), ("all", "full"), ("all", "diag"),
            ("all", "kron"))  # fmt: skip
DATA = Path(__file__).resolve().parents[1] / "ppl_dgp" / "data" / "moons.npz"


def child(subset: str, structure: str) -> dict:
    t_start = time.perf_counter()
    import numpy as np
    import torch
    from laplace import Laplace

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    d = np.load(DATA)
    X, y = torch.tensor(d["X_train"]), torch.tensor(d["y_train"], dtype=torch.long)
    Xt, yt = torch.tensor(d["X_test"]), d["y_test"]
    # two logits (softmax over 2 classes): laplace-torch's classification likelihood; the
    # one-logit Bernoulli net of ppl_dgp has one output fewer in the last layer (33 weights)
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    lam, N = 1.0, X.shape[0]
    t = time.perf_counter()
    for _ in range(3000):
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(net(X), y)
        reg = lam / (2 * N) * sum((p**2).sum() for p in net.parameters())
        (ce + reg).backward()
        opt.step()
    map_seconds = time.perf_counter() - t
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=N)
    t = time.perf_counter()
    la = Laplace(net, "classification", subset_of_weights=subset, hessian_structure=structure,
                 prior_precision=lam)  # fmt: skip
    la.fit(loader)
    la.optimize_prior_precision(method="marglik")
    fit_seconds = time.perf_counter() - t
    t = time.perf_counter()
    p = la(Xt, link_approx="probit")[:, 1].detach().numpy()
    predict_seconds = time.perf_counter() - t
    return {"subset": subset, "structure": structure, "map_seconds": round(map_seconds, 3),
            "fit_seconds": round(fit_seconds, 4), "predict_seconds": round(predict_seconds, 4),
            "fit_predict_seconds": round(fit_seconds + predict_seconds, 4),
            "test_accuracy": float(np.mean((p > 0.5) == yt)),
            "prior_precision": float(la.prior_precision.mean()),
            "process_to_here_seconds": round(time.perf_counter() - t_start, 3)}  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(child(sys.argv[1], sys.argv[2])), flush=True)
    else:
        for subset, structure in VARIANTS:
            out = subprocess.run([sys.executable, __file__, subset, structure],
                                 capture_output=True, text=True, check=False)  # fmt: skip
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                continue
            print(out.stdout.strip().splitlines()[-1], flush=True)
