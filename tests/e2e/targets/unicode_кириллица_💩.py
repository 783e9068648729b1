"""Non-ASCII names, for tests/e2e/test_fidelity.py: a file name with Cyrillic and an emoji (a
character outside the BMP), functions named in Cyrillic and CJK, locals holding such text."""
import sys
import time


def кириллица(значение, 参数):
    测试 = "测试1 — ünïcödé 💩"
    empty = ""
    print("ready", flush=True)
    sys.stdin.readline()  # UNI_WAIT_LINE
    return значение, 参数, 测试, empty


def 函数():
    return кириллица("текст", 42)  # UNI_CALL_LINE


函数()  # UNI_MODULE_LINE
