"""A target for the REPL and client tests: a small callable "model" and "optimizer" in __main__, a dict
with string keys, and a main loop that sleeps (so evals get the GIL at once)."""
import time


class Model:
    def __init__(self):
        self.training = True
        self.layers = {"encoder": 3, "decoder": 2}

    def named_parameters(self):
        return [("encoder.weight", (4, 4)), ("decoder.bias", (4,))]

    def __call__(self, x):  # callable, as a torch module is: completion must not add "("
        return x


model = Model()
optimizer = {"param_groups": [{"lr": 0.01}]}
settings_table = {"learning_rate": 0.01, "layers": 2}
counter = 0

print("ready", flush=True)
while True:
    counter += 1
    time.sleep(0.05)
