"""The tally the client scripts keep: one line per check, then "N failures"
and an exit status that says whether any failed."""
import sys

_failures = 0


def check(ok, what):
    global _failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        _failures += 1


def finish():
    print(f"{_failures} failures", flush=True)
    sys.exit(1 if _failures else 0)
