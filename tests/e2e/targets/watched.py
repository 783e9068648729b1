"""A training loop in train() changes trainer.lr at two lines (halved every 3rd step, reset every
5th), grows trainer.history in place, and replaces trainer.batch with an equal new list each step.
Prints 'ready', then runs 20 steps a second until killed."""
import time


class Trainer:
    def __init__(self):
        self.lr = 0.1
        self.history = []
        self.batch = [1, 2]


def train(trainer):
    step = 0
    while True:
        step += 1
        if step % 3 == 0:
            trainer.lr = trainer.lr * 0.5  # WATCH_DECAY
        if step % 5 == 0:
            trainer.lr = 1.0  # WATCH_RESET
        trainer.history.append(step)  # WATCH_HISTORY
        trainer.batch = [1, 2]  # WATCH_BATCH
        time.sleep(0.05)


trainer = Trainer()
print("ready", flush=True)
train(trainer)
