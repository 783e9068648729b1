"""A function with 3 arguments (one keyword-only) and 30 locals of many types, parked in a read
of stdin once they are all set: `backtrace --locals` must list them as declared."""
import sys


def work(alpha, beta, *, gamma):
    local1 = 1
    local2 = 2.5
    local3 = "three"
    local4 = b"four"
    local5 = [5]
    local6 = (6,)
    local7 = {7: 7}
    local8 = {8}
    local9 = None
    local10 = True
    local11 = 11
    local12 = 12
    local13 = 13
    local14 = 14
    local15 = 15
    local16 = 16
    local17 = 17
    local18 = 18
    local19 = 19
    local20 = 20
    local21 = 21
    local22 = 22
    local23 = 23
    local24 = 24
    local25 = 25
    local26 = 26
    local27 = 27
    local28 = 28
    local29 = 29

    def closure():
        return local30
    local30 = 30
    print("ready", flush=True)
    sys.stdin.readline()
    return closure


work(1, 2, gamma=3)
