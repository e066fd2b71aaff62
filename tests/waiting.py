"""Polling helper for tests that watch a background process or a browser."""
import time


def wait_for(pred, timeout: float = 90.0, what: str = "condition", every: float = 0.25):
    """Return pred()'s first truthy value; fail naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
