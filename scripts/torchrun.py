"""torchrun (python -m torch.distributed.run) as Debian's PyTorch needs it, for `make demo` and
the tests: Debian builds PyTorch 2 without libuv, which torchrun's rendezvous store and its
ranks' clients of it ask for (torchrun_site/torchrun_compat.py says more); here and in every rank
TCPStore defaults to the classic implementation. PyTorch 1.13's torchrun on Python 3.11 also
needs `--redirects` and `--tee` other than their default 0; callers pass them.

usage: python3 scripts/torchrun.py [torchrun's arguments]
"""
import os
import runpy
import sys

SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchrun_site")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SITE, os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, SITE)
from torchrun_compat import use_classic_tcpstore  # noqa: E402

use_classic_tcpstore()
sys.argv[0] = "torchrun"
runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)
