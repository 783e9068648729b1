"""Stands in for a PyTorch process on a GPU, for `memory cuda-history` on machines without one:
fake modules torch, torch.cuda and torch.cuda.memory (CUDA initialized, the 2.1+ recording API)
in sys.modules, recording how the agent called them. Prints 'ready'; then idles."""
import sys
import time
import types

calls = []

torch = types.ModuleType("torch")
torch.__version__ = "2.99.0+fake"
cuda = types.ModuleType("torch.cuda")
cuda.is_initialized = lambda: True
memory = types.ModuleType("torch.cuda.memory")


def _record_memory_history(enabled="all", context="all", stacks="all", max_entries=1):
    calls.append(("record", enabled, max_entries))


def _snapshot():
    calls.append(("snapshot",))
    return {"segments": [{"device": 0, "total_size": 2 << 20}],
            "device_traces": [[{"action": "alloc", "size": 512}, {"action": "free_completed", "size": 512}]]}


memory._record_memory_history = _record_memory_history
memory._snapshot = _snapshot
torch.cuda = cuda
cuda.memory = memory
sys.modules.update({"torch": torch, "torch.cuda": cuda, "torch.cuda.memory": memory})

print("ready", flush=True)
while True:
    time.sleep(0.1)
