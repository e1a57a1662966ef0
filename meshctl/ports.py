"""Which local TCP ports are taken, and by which process: so a port clash at start-up names
the port, the process holding it and the way out, instead of a service's exit code."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


@dataclass(frozen=True)
class Holder:
    pid: int
    cmdline: str
    parent_pid: int
    parent_cmdline: str

    @property
    def is_launcher_child(self) -> bool:
        """Started by another `python -m meshctl run` (a second `make run`)."""
        return "meshctl" in self.parent_cmdline and " run" in self.parent_cmdline


@dataclass(frozen=True)
class Clash:
    port: int
    what: str
    holder: Holder | None


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now. SO_REUSEADDR like the servers set, so a
    port in TIME_WAIT after a restart counts as free; no SO_REUSEPORT, so a gRPC server already
    listening there (which sets it, and would otherwise share the port silently) counts as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name in parentheses may contain spaces: the fields after the last ")" are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


def port_holder(port: int) -> Holder | None:
    """The process listening on `port` (any local address), from /proc/net/tcp* and the socket
    links in /proc/<pid>/fd; None when it cannot be seen (another user's process, as non-root)."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in targets:
                        pid = int(entry.name)
                        parent = _parent(pid)
                        return Holder(pid, _cmdline(pid), parent, _cmdline(parent) if parent else "")
                except OSError:
                    continue
    return None


def find_clashes(ports: list[tuple[int, str]], host: str = "127.0.0.1") -> list[Clash]:
    return [Clash(port, what, port_holder(port)) for port, what in ports if not port_is_free(port, host)]


def describe_clashes(clashes: list[Clash]) -> str:
    """The message `make run` prints: each taken port and its holder, then the way out."""
    lines = ["these ports are already in use:"]
    for clash in clashes:
        if clash.holder is None:
            lines.append(f"  {clash.port:<6} ({clash.what}): held by a process this user cannot see")
        else:
            lines.append(f"  {clash.port:<6} ({clash.what}): pid {clash.holder.pid}, {clash.holder.cmdline}")
    launchers = sorted({c.holder.parent_pid for c in clashes if c.holder is not None and c.holder.is_launcher_child})
    if launchers:
        pids = " ".join(str(pid) for pid in launchers)
        lines.append(
            f"Another `make run` is running (launcher pid {pids}). Stop it with Ctrl-C in its terminal "
            f"or `kill {pids}`, or run this one beside it on free ports:"
        )
    else:
        lines.append("Stop the process holding the port, or run the mesh on free ports instead of the defaults:")
    lines.append("  make run MESH_ARGS=--ephemeral-ports   (or: .venv/bin/python -m meshctl run --ephemeral-ports)")
    return "\n".join(lines)
