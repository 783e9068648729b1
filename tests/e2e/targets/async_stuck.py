"""An asyncio program stuck as a server gets stuck: 40 connection handlers wait for a lock that a
task holds while it waits for an event nobody sets; two tasks await each other (a deadlock); a
second event loop runs in a thread of its own. With BLOCK=1 a task then blocks the main loop in
time.sleep. It prints 'ready' once every task waits where it stays."""
import asyncio
import os
import threading
import time


async def holder(lock, never):
    async with lock:
        await never.wait()  # TASKS_HOLDER_LINE


async def handle(lock):
    async with lock:  # TASKS_CONN_LINE
        pass


async def waits_for(tasks, other):
    await asyncio.sleep(0)
    await tasks[other]  # TASKS_CYCLE_LINE


async def blocker():
    time.sleep(3600)  # TASKS_BLOCK_LINE


def side_loop(started):
    async def side():
        sleeper = asyncio.create_task(asyncio.sleep(3600), name="side-sleeper")
        started.set()
        await sleeper

    asyncio.run(side())


async def main():
    side_started = threading.Event()
    threading.Thread(target=side_loop, args=(side_started,), name="side-loop", daemon=True).start()
    lock, never = asyncio.Lock(), asyncio.Event()
    held = asyncio.create_task(holder(lock, never), name="lock-holder")
    await asyncio.sleep(0)
    conns = [asyncio.create_task(handle(lock), name="conn-%d" % i) for i in range(40)]
    tasks = {}
    tasks["ping"] = asyncio.create_task(waits_for(tasks, "pong"), name="ping")
    tasks["pong"] = asyncio.create_task(waits_for(tasks, "ping"), name="pong")
    await asyncio.sleep(0.1)
    side_started.wait()
    if os.environ.get("BLOCK"):
        asyncio.get_running_loop().call_soon(lambda: print("ready", flush=True))
        asyncio.create_task(blocker(), name="blocker")
    else:
        print("ready", flush=True)
    await asyncio.gather(held, *conns)


asyncio.run(main())
