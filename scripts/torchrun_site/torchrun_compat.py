"""Debian's PyTorch 2 is built without libuv, yet torchrun's rendezvous store, and each rank's
client of it, ask for libuv with no way to say otherwise (only the process group's own store reads
USE_LIBUV=0): every torchrun job fails at its start. use_classic_tcpstore() makes TCPStore default
to the classic server and client; scripts/torchrun.py calls it in torchrun, and sitecustomize.py
(beside this file, first on the ranks' PYTHONPATH) in every rank."""


import sys


def use_classic_tcpstore():
    """Makes torch.distributed.TCPStore default to use_libuv=False where PyTorch has the
    option (2.2+) and lacks libuv."""
    import torch.distributed as dist

    store = getattr(dist, "TCPStore", None)
    if store is None or "use_libuv" not in (store.__init__.__doc__ or "") or getattr(store, "_classic", False):
        return

    class TCPStore(store):
        _classic = True

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("use_libuv", False)
            super().__init__(*args, **kwargs)

    dist.TCPStore = TCPStore
    # The rendezvous module imported the name before this ran. (By sys.modules: the attribute
    # torch.distributed.rendezvous is a function of that module, named like it.)
    sys.modules["torch.distributed.rendezvous"].TCPStore = TCPStore
