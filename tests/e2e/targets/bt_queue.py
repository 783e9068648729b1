"""The main thread blocks in consumer() on queue.Queue.get() with nothing ever put."""
import queue

jobs = queue.Queue()


def consumer():
    print("ready", flush=True)
    return jobs.get()  # BT_GET_LINE


consumer()
