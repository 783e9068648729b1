"""A function that lets go of a local after its stack was read with locals: whether the object is
freed then (reading another thread's f_locals on 3.9-3.12 leaves a dict of the locals on the frame
unless the reader takes it off again).

argv: "plain", or "mine" to hold the frame's own locals() dict first (as code that passes
locals() on does), which the reader must refresh and leave. Prints 'ready', reads a line, drops
the local, then prints 'freed' or 'kept alive', and for "mine" the names its dict holds."""
import sys
import weakref


class Big:
    pass


def work(mode):
    obj = Big()
    ref = weakref.ref(obj)
    mine = locals() if mode == "mine" else None
    print("ready", flush=True)
    sys.stdin.readline()
    obj = None  # BT_DROP_LINE
    print("freed" if ref() is None else "kept alive", flush=True)
    if mine is not None:
        print("mine:", " ".join(sorted(k for k in mine if k != "mine")), flush=True)


work(sys.argv[1])
