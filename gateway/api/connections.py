"""What client connections cost the process: file descriptors, and how many are open now."""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["FD_RESERVE", "ensure_fd_limit", "open_connections"]

# Descriptors the gateway needs besides client connections: listening sockets, Redis, the
# metrics server's connections, model files while loading, pipes of memory probes, logs.
FD_RESERVE = 256
_ESTABLISHED = "01"


def ensure_fd_limit(max_connections: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE to what `max_connections` needs when the hard limit
    allows it (as the JVM and Go's runtime do); a warning to log when it does not."""
    needed = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return None
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return (
        f"the open-file limit ({hard}) is lower than --max-connections {max_connections} needs"
        f" ({needed}, with {FD_RESERVE} for everything else): connections beyond about"
        f" {max(hard - FD_RESERVE, 0)} fail with 'too many open files' instead of being refused"
        " cleanly; raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections"
    )


def open_connections(port: int) -> int:
    """Established TCP connections to local `port`, from the kernel's socket tables (of this
    network namespace: with workers on one port, all of theirs)."""
    wanted = f"{port:04X}"
    count = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split(None, 4)
            if len(fields) > 3 and fields[3] == _ESTABLISHED and fields[1].endswith(":" + wanted):
                count += 1
    return count
