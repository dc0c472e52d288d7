"""The distillation step of gowalla's codes with and without hashgnn.memory.keep_freed_memory.

30 steps of a 1,024-user batch scored against 40,981 items (64-dim codes), softmax and backward,
each in a fresh process: wall, user and system seconds and minor page faults.

    python bench/keep_freed_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys

STEP = """
import json, resource, sys, time
import torch
from hashgnn.memory import keep_freed_memory
if sys.argv[1] == "on":
    keep_freed_memory()
torch.set_num_threads(2)
xu = torch.randn(29858, 64, requires_grad=True)
xi = torch.randn(40981, 64, requires_grad=True)
t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
for _ in range(30):
    b = torch.randint(0, 29858, (1024,))
    logp = torch.log_softmax((xu[b] @ xi.T) / 8, 1)
    (-logp[:, :100].mean()).backward()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"setting": sys.argv[1], "wall_s": round(time.perf_counter() - t0, 2),
    "user_s": round(r1.ru_utime - r0.ru_utime, 2), "system_s": round(r1.ru_stime - r0.ru_stime, 2),
    "minor_faults": r1.ru_minflt - r0.ru_minflt}))
"""

for setting in ("off", "on"):
    out = subprocess.run([sys.executable, "-c", STEP, setting], capture_output=True, text=True, check=True)
    print(json.dumps(json.loads(out.stdout)))
