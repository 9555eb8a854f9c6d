"""verify, diff and check: the lock's expected facts compared with what was observed."""
