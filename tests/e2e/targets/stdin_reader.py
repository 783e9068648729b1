"""A target blocked in sys.stdin.readline(). For each line N it prints 'echo N squared N*N'."""
import sys

counter = 0
model = {"layers": 3}

print("ready", flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    text = line.strip()
    counter += 1
    try:
        n = int(text)
        print("echo %s squared %d" % (text, n * n), flush=True)
    except ValueError:
        print("echo %s" % text, flush=True)
print("eof", flush=True)
