"""Exceptions nothing catches, on command (one word a line on stdin):
  mine    the program sets its own threading.excepthook, which prints 'mine: TYPE' and calls the
          one it replaced
  raise   a thread named 'loader' raises ValueError('bad batch 7') in load_batch(7) (locals
          index, items); a Leaky object's __del__ raises RuntimeError('close failed'); a thread
          named 'lookup' raises RuntimeError('lookup failed') from a KeyError
  die     the main thread raises SystemError('the end') out of main(): the program ends with
          the usual traceback and exit status 1
Prints 'ready', and 'done WORD' after each word."""
import sys
import threading


def load_batch(index):
    items = [1, 2, 3]
    raise ValueError("bad batch %d" % index)  # EXC_RAISE_LINE


def lookup():
    try:
        {}["k"]
    except KeyError as e:
        raise RuntimeError("lookup failed") from e


class Leaky:
    def __del__(self):
        raise RuntimeError("close failed")


def run(target, name):
    t = threading.Thread(target=target, name=name)
    t.start()
    t.join()


def main():
    print("ready", flush=True)
    for line in sys.stdin:
        word = line.strip()
        if word == "mine":
            theirs = threading.excepthook

            def mine(args):
                print("mine:", args.exc_type.__name__, flush=True)
                theirs(args)
            threading.excepthook = mine
        elif word == "raise":
            run(lambda: load_batch(7), "loader")
            Leaky()
            run(lookup, "lookup")
        elif word == "die":
            raise SystemError("the end")
        print("done", word, flush=True)


main()
