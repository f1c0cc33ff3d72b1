"""Keep freed CPU memory in the process for the next step (glibc's malloc).

Per-task gradients are large blocks that live for one step. glibc's malloc hands such blocks
back to the kernel when they are freed, so every step pays again for freshly zeroed pages: on
the speed benchmark's MLP, 4,000 page faults and about a tenth of a Jacobian step at K = 8, and
most of the run-to-run noise in step times. These settings make malloc reuse them instead.
"""

from __future__ import annotations

import ctypes
import platform
import sys

# (mallopt parameter from glibc's malloc.h, the same setting's environment variable, value)
_SETTINGS = (
    (-3, "MALLOC_MMAP_THRESHOLD_", 32 << 20),  # M_MMAP_THRESHOLD: glibc's ceiling on 64-bit
    (-1, "MALLOC_TRIM_THRESHOLD_", 1 << 30),  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    (-2, "MALLOC_TOP_PAD_", 64 << 20),  # M_TOP_PAD: grow the heap in 64 MiB steps
)


def has_glibc() -> bool:
    """Whether this process allocates through glibc's malloc (Linux with glibc, not musl)."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks of up to 32 MiB for reuse instead of returning
    them to the kernel; the resident size then stays near its peak. Process-wide, so call it once
    from the program's entry point (the `polytask` CLI does). Returns whether the settings were
    applied: False where malloc is not glibc's (macOS, Windows, musl), which need nothing."""
    if not has_glibc():
        return False
    libc = ctypes.CDLL("libc.so.6")
    # In this order, and stopping at a refusal: a trim threshold without the raised mmap
    # threshold would map every large block afresh (slower than glibc's defaults).
    return all(libc.mallopt(param, value) == 1 for param, _, value in _SETTINGS)


def retained_memory_env() -> dict[str, str]:
    """The same settings as environment variables, for a child process (empty off glibc)."""
    return {name: str(value) for _, name, value in _SETTINGS} if has_glibc() else {}
