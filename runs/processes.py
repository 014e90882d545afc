"""Processes on this host: starting trainers, who is alive (read from /proc), stopping groups.

A trainer (or an evaluation engine) runs in its own process group (session), so
stopping it means signalling the group: the trainer and whatever it forked go
together. On Linux the trainer also gets SIGKILL from the kernel when its
supervisor dies (`die_with_parent`). `process_start` starts one that way.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

# Seconds between SIGTERM and SIGKILL when a trainer's process group is stopped.
KILL_GRACE_SECONDS = 3.0


def host_name() -> str:
    """This host's name as a run records it (its host fields hold 255 characters)."""
    return socket.gethostname()[:255]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_fingerprint(pid: int) -> str:
    """A token naming this very process (boot id + start time), "" where /proc is absent."""
    stat = _proc_stat(pid)
    if stat is None or len(stat) < 20:
        return ""
    return f"{_boot_id()}:{stat[19]}"


def process_alive(pid: int, fingerprint: str = "") -> bool:
    """Whether `pid` is a live (non-zombie) process and, given a fingerprint, the same one.

    The fingerprint tells a recycled pid (after a restart, or much later) from the
    process that was recorded.
    """
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return not fingerprint or process_fingerprint(pid) == fingerprint
    try:  # pragma: no cover - platforms without /proc
        os.kill(pid, 0)
    except ProcessLookupError:  # pragma: no cover
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True  # pragma: no cover


def process_group_signal(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a process group; a group that is gone (or not ours) is left be."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def process_group_stop(
    process: subprocess.Popen[bytes], *, grace: float = KILL_GRACE_SECONDS
) -> None:
    """SIGTERM the group led by `process`, SIGKILL it after `grace` seconds, reap the leader."""
    if process.poll() is None:
        process_group_signal(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process_group_signal(process.pid, signal.SIGKILL)
            process.wait()
    # Whatever the leader left behind in its group (children that ignored SIGTERM,
    # daemons it forked) goes too.
    process_group_signal(process.pid, signal.SIGKILL)


# prctl(2) option: the signal a process receives when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Any:
    """libc's prctl, or None (not Linux, or no libc to load)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` making the child get SIGKILL when this process (its forking thread) ends.

    So a trainer never outlives its supervisor, however that one dies (kill -9
    included). None where the platform has no PR_SET_PDEATHSIG. Loaded before the
    fork: the child only makes the call.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent died between the fork and the prctl: nobody would signal us.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def process_start(
    argv: list[str], *, cwd: Path, env: dict[str, str], stdout: IO[bytes], stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start `argv` in `cwd` as a supervised child: its own session, dying with this process.

    `env` is its whole environment (the caller's scrubbed one, nothing inherited);
    stdin is /dev/null and no other descriptor of this process is passed on. Raises
    OSError when the command cannot be started.
    """
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        start_new_session=True,
        close_fds=True,
        # Only a prctl call in the child (die_with_parent).
        preexec_fn=die_with_parent(),
    )


def orphans_find(pgid: int, run_dir: Path) -> list[int]:
    """Live processes of process group `pgid` working in `run_dir` (Linux /proc)."""
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:  # pragma: no cover - no /proc
        return []
    found = []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is None or stat[0] in ("Z", "X") or len(stat) < 3 or stat[2] != str(pgid):
            continue
        with contextlib.suppress(OSError):
            if (entry / "cwd").readlink().resolve() == run_dir.resolve():
                found.append(int(entry.name))
    return found


def orphans_kill(pgid: int, run_dir: Path) -> None:
    """Kill a dead run's trainer group, if its processes still work in the run directory.

    The cwd check keeps an unrelated process that got the recorded pid safe.
    """
    if not orphans_find(pgid, run_dir):
        return
    logger.warning("killing the orphaned trainer process group %d of %s", pgid, run_dir.name)
    process_group_signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < deadline and orphans_find(pgid, run_dir):
        time.sleep(0.05)
    process_group_signal(pgid, signal.SIGKILL)
