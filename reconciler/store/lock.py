"""One writer per state directory.

An advisory `flock` on STATE_DIR/lock: the kernel drops it when the holder's
process dies, even by kill -9, so a crash never leaves a stale lock behind.
Who holds it is written to STATE_DIR/lock.info for the refusal message; that
file is only informative, the flock is the truth.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from reconciler.core.diagnostics import UserError


class StateLock:
    def __init__(self, state_dir: Path, purpose: str):
        self.state_dir = Path(state_dir)
        self.purpose = purpose
        self.lock_path = self.state_dir / "lock"
        self.info_path = self.state_dir / "lock.info"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "StateLock":
        if self._fd is not None:
            raise RuntimeError("StateLock is not re-entrant")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(self._refusal()) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {
            "pid": os.getpid(),
            "purpose": self.purpose,
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = self.info_path.with_name("lock.info.tmp")
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, self.info_path)  # readers never see a half-written file
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # remove the info while still holding the lock, so it never describes the next holder
        try:
            self.info_path.unlink()
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _refusal(self) -> str:
        try:
            info = json.loads(self.info_path.read_text())
            where = "" if info.get("host") == socket.gethostname() else f" on {info.get('host', '?')}"
            holder = f"{info.get('purpose', '?')} (pid {info.get('pid', '?')}{where}, since {info.get('since', '?')})"
        except (OSError, ValueError):
            holder = "another process (it has not said which yet)"
        return f"the state in {self.state_dir} is locked by {holder}; wait for it to finish, or stop it"

    def __enter__(self) -> "StateLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
