"""Size and memory limits of ingest, checked from image headers before any voxel is read.

An image (or the grid it is resampled to) beyond what the machine can hold should fail with one
message that says how large it is and what to do, not with a traceback from deep inside ITK after
minutes of swapping. The limits are not ingest settings: they do not change what is stored, so
they are not hashed into fingerprints.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from pipelines.exceptions import InputError

GIB = 2**30
FLOAT32 = 4  # bytes of one voxel of the float32 working copies


@dataclass(frozen=True)
class IngestLimits:
    """Largest image ingest accepts.

    max_voxels: voxels of a source image and of its resampled grid (default 2**30, 4 GiB as
    float32). memory_bytes: memory one patient's ingest may use; None detects it (the smallest of
    the address-space rlimit, the cgroup memory limit and the physical memory, minus what the
    process already uses).
    """

    max_voxels: int = 2**30
    memory_bytes: int | None = None
    # patients ingested at once in this process (local parallel workers) share a detected budget
    share: int = 1

    def __post_init__(self):
        if not self.max_voxels >= 1:
            raise InputError(f"--max-voxels must be >= 1, got {self.max_voxels}")
        if self.memory_bytes is not None and not self.memory_bytes > 0:
            raise InputError(f"--memory-limit must be > 0 GiB, got {self.memory_bytes / GIB:g}")


def memory_budget_bytes() -> int:
    """Return the memory this process can still use: the smallest of the address-space rlimit
    (minus the address space in use), the cgroup (v2 or v1) memory limit and the physical memory
    (minus this process's resident memory)."""
    vm, rss = _own_memory()
    budgets = [_physical_memory() - rss]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        budgets.append(soft - vm)
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(f) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            budgets.append(int(text) - rss)
    return max(0, min(budgets))


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62


def _own_memory() -> tuple[int, int]:
    """Return (virtual size, resident size) of this process in bytes (0, 0 if unknown)."""
    try:
        with open("/proc/self/statm") as f:
            vm, rss = (int(v) for v in f.read().split()[:2])
        page = os.sysconf("SC_PAGE_SIZE")
        return vm * page, rss * page
    except (OSError, ValueError):
        return 0, 0


def ingest_peak_bytes(source_voxels: int, source_bytes_per_voxel: int, grid_voxels: int,
                      modalities: int = 1) -> int:
    """Return the peak memory ingest needs for one image (and the images already prepared).

    The stages of one image (pipelines.ingest.prepare_patient): the source image with its float32
    copy normalised to [0, 1]; then that copy with the resampled grid; then the grid with its
    numpy copy. Each earlier modality of the patient keeps its float32 grid and uint8 mask.
    """
    src = source_voxels * source_bytes_per_voxel
    one = max(2 * src,  # a NIfTI read: nibabel's array and the ITK image
              src + FLOAT32 * source_voxels,
              FLOAT32 * (source_voxels + grid_voxels),
              2 * FLOAT32 * grid_voxels)
    masks = 2 * (source_voxels + grid_voxels)  # the uint8 mask, its copies and its resampled grid
    return one + masks + (modalities - 1) * (FLOAT32 + 1) * grid_voxels


def format_bytes(n: float, digits: int = 1) -> str:
    """Return '12.0 GiB', or '350.0 MiB' below a tenth of a GiB."""
    return f"{n / GIB:.{digits}f} GiB" if n >= GIB / 10 else f"{n / 2**20:.{digits}f} MiB"


def describe_size(size_xyz, voxels: int | None = None) -> str:
    """Return '512 x 512 x 400 voxels (x, y, z) = 1.05e+08 voxels, 0.39 GiB as float32'."""
    n = voxels if voxels is not None else _prod(size_xyz)
    dims = " x ".join(str(int(s)) for s in size_xyz)
    return f"{dims} voxels (x, y, z) = {n:.3g} voxels, {format_bytes(n * FLOAT32, 2)} as float32"


def check_voxels(where: str, size_xyz, limits: IngestLimits, what: str, fix: str) -> None:
    """Raise InputError naming `where` if a grid of `size_xyz` has more than the voxel limit."""
    n = _prod(size_xyz)
    if n > limits.max_voxels:
        raise InputError(
            f"{where}: {what} would be {describe_size(size_xyz, n)}, over the limit of "
            f"{limits.max_voxels} voxels: {fix} (or raise --max-voxels)"
        )


def check_memory(where: str, need: int, limits: IngestLimits, fix: str) -> None:
    """Raise InputError naming `where` if `need` bytes exceed the memory limit."""
    budget = (limits.memory_bytes if limits.memory_bytes is not None
              else memory_budget_bytes() // max(1, limits.share))
    if need > budget:
        origin = ("--memory-limit" if limits.memory_bytes is not None else "detected"
                  if limits.share <= 1 else f"detected, shared by {limits.share} workers; "
                  "fewer --workers leave each more")
        raise InputError(
            f"{where}: ingesting it needs about {format_bytes(need)} of memory, but only "
            f"{format_bytes(budget)} is available ({origin}): {fix}"
        )


def _prod(size) -> int:
    n = 1
    for s in size:
        n *= int(s)
    return n
