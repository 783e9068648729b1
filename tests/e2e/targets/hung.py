"""A process in one of the states a hung job is found in; argv[1] names it. Prints 'ready' when
it is set up, just before its threads settle into the wait. Every thread ends up waiting:

  queue          the main thread in queue.Queue().get(), forever
  queue_timeout  the main thread in a loop of get(timeout=1)
  deadlock       two threads, each holding one threading.Lock and waiting for the other's;
                 the main thread join()s the first
  rlock          two threads, the second waiting in `with guard:` for an RLock the first holds
                 while it waits in Event().wait(); the main thread join()s the second
  waits          one thread in Event().wait(), one in time.sleep(), the main thread in join()
  gil            one thread holding the GIL in C calls (sum over a range, about 0.3 s each),
                 the main thread and two others waiting for it
  loader_lock    the only thread waits inside a dl_iterate_phdr() callback, holding the
                 loader's list lock: no thread is safe to borrow for dlopen()
  dataloader     a torch DataLoader(num_workers=2) whose workers are stopped (SIGSTOP): the main
                 thread waits for a batch; torch's intra-op threads are idle in their pool.
                 Prints 'workers PID PID' before 'ready'.
  sleep          torch imported, a 4 KB tensor `weights`, and the main thread in time.sleep()
                 for an hour (a C call of the program's own, as a long PyTorch operation is)
"""
import os
import queue
import signal
import sys
import threading
import time

model = {"layers": 3}


def deadlock():
    first, second = threading.Lock(), threading.Lock()
    both_held = threading.Barrier(2)

    def take(mine, theirs):
        with mine:
            both_held.wait()
            with theirs:  # HUNG_DEADLOCK_LINE
                pass

    a = threading.Thread(target=take, args=(first, second), name="holds-first")
    b = threading.Thread(target=take, args=(second, first), name="holds-second")
    a.start()
    b.start()
    print("ready", flush=True)
    a.join()


def rlock():
    guard = threading.RLock()
    held = threading.Event()

    def hold():
        with guard:
            held.set()
            threading.Event().wait()

    def want():
        held.wait()
        with guard:  # HUNG_RLOCK_LINE
            pass

    threading.Thread(target=hold, name="rlock-holder", daemon=True).start()
    wanting = threading.Thread(target=want, name="rlock-wanter", daemon=True)
    wanting.start()
    print("ready", flush=True)
    wanting.join()


def waits():
    event = threading.Event()
    waiter = threading.Thread(target=event.wait, name="event-waiter")
    sleeper = threading.Thread(target=time.sleep, args=(3600,), name="sleeper")
    waiter.start()
    sleeper.start()
    print("ready", flush=True)
    waiter.join()


def gil():
    def hold():
        while True:
            sum(range(8_000_000))  # C code with the GIL held throughout
            time.sleep(0.01)

    def want():
        while True:
            time.sleep(0.001)

    threading.Thread(target=hold, name="gil-holder", daemon=True).start()
    for i in range(2):
        threading.Thread(target=want, name="wants-gil-%d" % i, daemon=True).start()
    print("ready", flush=True)
    want()


def loader_lock():
    import ctypes

    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)

    def each_object(info, size, data):
        print("ready", flush=True)
        threading.Event().wait()
        return 1

    callback = callback_type(each_object)
    ctypes.CDLL(None).dl_iterate_phdr(callback, None)


class Squares:
    """A map-style dataset; at module level so that DataLoader workers started by forkserver or
    spawn (3.14's default) find it by name."""

    def __len__(self):
        return 1_000_000

    def __getitem__(self, i):
        import torch
        return torch.full((4,), float(i * i))


def dataloader():
    import torch
    from torch.utils.data import DataLoader

    torch.matmul(torch.ones(64, 64), torch.ones(64, 64))  # starts the intra-op pool
    loader = DataLoader(Squares(), batch_size=8, num_workers=2)
    batches = iter(loader)
    for w in batches._workers:
        os.kill(w.pid, signal.SIGSTOP)
    # (children of this process when forked, of the forkserver when 3.14's default starts them)
    print("workers " + " ".join(str(w.pid) for w in batches._workers), flush=True)
    print("ready", flush=True)
    for _ in batches:  # what the workers made before they stopped, then a wait for more
        pass


if __name__ == "__main__":  # a forkserver or spawn worker imports this file too
    mode = sys.argv[1]
    if mode == "queue":
        print("ready", flush=True)
        queue.Queue().get()
    elif mode == "queue_timeout":
        q = queue.Queue()
        print("ready", flush=True)
        while True:
            try:
                q.get(timeout=1)
            except queue.Empty:
                pass
    elif mode == "deadlock":
        deadlock()
    elif mode == "rlock":
        rlock()
    elif mode == "waits":
        waits()
    elif mode == "gil":
        gil()
    elif mode == "loader_lock":
        loader_lock()
    elif mode == "dataloader":
        dataloader()
    elif mode == "sleep":
        import torch

        weights = torch.zeros(1024)
        print("ready", flush=True)
        time.sleep(3600)
    else:
        sys.exit("unknown mode " + mode)
