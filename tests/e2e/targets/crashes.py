"""Prints 'ready', then reads one word from stdin and dies as it says: 'segv' reads address 0 in
native code (ctypes.string_at: a fault in the C library, called from Python), 'abort' calls
os.abort(). 'faulthandler' enables faulthandler (after the agent). 'fork-segv' forks a child that does 'segv', prints its wait status, and reads the
next word. With argv[1] == "torch", 'loader-segv' runs a DataLoader whose one worker does 'segv'
in the dataset's __getitem__ (a forked worker; 'loader-segv-spawn': a spawned one, after 1 s),
and prints the worker's pid once the loader raises. An idle second thread runs meanwhile."""
import ctypes
import os
import sys
import threading
import time

if sys.argv[1:] == ["torch"]:
    import torch.utils.data

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __init__(self, delay=0.0):
            self.delay = delay

        def __getitem__(self, i):
            if i == 2:
                time.sleep(self.delay)
                read_null()  # WORKER_LINE
            return i


def idle():
    while True:
        time.sleep(0.05)


def read_null():
    return ctypes.string_at(0)  # CRASH_LINE


if __name__ == "__main__":
    threading.Thread(target=idle, name="idle", daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        word = line.strip()
        if word == "segv":
            read_null()
        elif word == "abort":
            os.abort()
        elif word == "faulthandler":
            import faulthandler
            faulthandler.enable()
            print("enabled", flush=True)
        elif word == "fork-segv":
            child = os.fork()
            if child == 0:
                read_null()
            _, status = os.waitpid(child, 0)
            print("child %d status %d" % (child, status), flush=True)
        elif word in ("loader-segv", "loader-segv-spawn"):
            try:
                # A forked worker gets the agent's handlers back from torch tracing's wrapper of
                # PyTorch's; a spawned one from its own agent's next check, within 0.2 s at first:
                # it crashes after 1 s.
                spawn = word == "loader-segv-spawn"
                batches = iter(torch.utils.data.DataLoader(Items(1.0 if spawn else 0.0), num_workers=1,
                                                           multiprocessing_context="spawn" if spawn else "fork"))
                worker = batches._workers[0].pid
                for _ in batches:
                    pass
            except Exception:  # "DataLoader worker (pid 4242) is killed by signal", or an EOFError
                print("loader failed %d" % worker, flush=True)
