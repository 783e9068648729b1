"""An asyncio program whose loop is always busy: named tasks that compute between awaits (the loop
polls with a zero timeout, letting the GIL go and taking it back every millisecond), tasks that
only wait, a gather and a TaskGroup (3.11+)."""
import asyncio
import sys

counter = 0


def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


async def crunch():
    global counter
    while True:
        spin(5000)
        counter += 1
        await asyncio.sleep(0)


async def worker():
    await crunch()


async def sleeper():
    await asyncio.sleep(3600)


async def grouped():
    async with asyncio.TaskGroup() as group:
        group.create_task(worker(), name="group-child")
        group.create_task(sleeper(), name="group-sleeper")


async def main():
    tasks = [asyncio.create_task(worker(), name="busy-a"), asyncio.create_task(sleeper(), name="idle-sleeper")]
    if hasattr(asyncio, "TaskGroup"):
        tasks.append(asyncio.create_task(grouped(), name="grouper"))
    print("ready", flush=True)
    await asyncio.gather(*tasks)


asyncio.run(main())
