"""A process tree, for `probing PID children` and `backtrace --subprocesses`. argv[1]:
  pool        multiprocessing.Pool(2) by fork; each worker runs one task, parked in slow_task()
  pool_later  the same, made once a line comes on stdin (after 'ready')
  dataloader  a torch DataLoader(num_workers=2) whose workers sit in Slow.__getitem__
  zombie      one forked child that has exited and is never waited for, one that sleeps
Prints 'children PID PID' (the workers, or the two children) then 'ready'."""
import os
import sys
import time


def slow_task(i):
    time.sleep(1000)  # TREE_TASK_LINE
    return i


def pool(later=False):
    import multiprocessing
    if later:
        print("ready", flush=True)
        sys.stdin.readline()
    workers = multiprocessing.get_context("fork").Pool(2)
    workers.map_async(slow_task, range(2), chunksize=1)
    print("children " + " ".join(str(p.pid) for p in workers._pool), flush=True)
    if not later:
        print("ready", flush=True)
    sys.stdin.readline()


class Slow:
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        time.sleep(1000)  # TREE_GETITEM_LINE
        return i


def dataloader():
    import torch
    from torch.utils.data import DataLoader
    batches = iter(DataLoader(Slow(), batch_size=2, num_workers=2))
    print("children " + " ".join(str(w.pid) for w in batches._workers), flush=True)
    print("ready", flush=True)
    next(batches)


def zombie():
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    sleeper = os.fork()
    if sleeper == 0:
        time.sleep(1000)
        os._exit(0)
    print("children %d %d" % (gone, sleeper), flush=True)
    print("ready", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":  # a forkserver (3.14's default) imports this module again
    modes = {"pool": pool, "pool_later": lambda: pool(later=True), "dataloader": dataloader, "zombie": zombie}
    modes[sys.argv[1]]()
