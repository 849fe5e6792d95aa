"""Utilization profiles: each metric value is a pure function of (seed, instance, profile, time).

Nothing is stored per minute, so a fleet of 5000 instances costs no memory for its history and any
window can be answered at once. Randomness comes from a 64-bit mixing hash (splitmix64 finaliser)
of the inputs (segment boundaries cached), so the same seed always gives the same numbers.

Profiles (all values are percentages):

* ``trainer``: GPU 88-98 %, with one data-loading dip to ~10 % of 2-4 minutes in every 30-minute
  segment (never 30 minutes low); CPU high during the dips.
* ``inference``: bursty. Baseline 3-12 %, one guaranteed burst (55-95 %, 3-6 min) in every
  15-minute segment plus random one-minute bursts.
* ``idle``: a forgotten notebook, GPU 0-2 %, VRAM nearly empty (2-5 %: the kernel finished).
* ``partial``: a multi-GPU box; GPUs listed in the instance's idle set behave like ``idle``, the
  others like ``trainer``.
* ``dataload``: work with the GPUs waiting: a long data-loading pause or CPU preprocessing; GPU
  0-3 %, VRAM still held (60-70 %), CPU 70-90 % per core.
* ``upload``: a checkpoint upload; GPU 0-3 %, VRAM held, CPU 20-35 % per core.

The backtest's scenarios (:mod:`monitor.sim.scenarios`) switch profiles along each instance's
trace of work and idle gaps.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

PROFILES = ("trainer", "inference", "idle", "partial", "dataload", "upload")
#: the GPUs wait while the CPU works
GPU_WAITING = ("dataload", "upload")

_MASK = (1 << 64) - 1


_M = (
    0x9E3779B97F4A7C15,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0xD6E8FEB86659FD93,
    0xFF51AFD7ED558CCD,
)


def mix(a: int, b: int = 0, c: int = 0, d: int = 0, e: int = 0) -> int:
    """A deterministic 64-bit hash of up to five integers (splitmix64 finaliser)."""
    z = (a * _M[0] + b * _M[1] + c * _M[2] + d * _M[3] + e * _M[4] + 0x632BE59BD9B4E019) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def unit(a: int, b: int = 0, c: int = 0, d: int = 0, e: int = 0) -> float:
    """A deterministic number in [0, 1)."""
    return mix(a, b, c, d, e) / 18446744073709551616.0


def key_of(seed: int, instance_id: str) -> int:
    return mix(seed, zlib.crc32(instance_id.encode()), 0x5EED)


@lru_cache(maxsize=65536)
def _trainer_dip(key: int, seg: int) -> tuple[float, float]:
    start = 300 + unit(key, seg, 1) * 1200
    return start, start + 120 + unit(key, seg, 2) * 120


def _in_trainer_dip(key: int, t: int) -> bool:
    seg, offset = divmod(t, 1800)
    start, end = _trainer_dip(key, seg)
    return start <= offset < end


@lru_cache(maxsize=65536)
def _inference_burst(key: int, seg: int) -> tuple[float, float]:
    start = unit(key, seg, 5) * 540
    return start, start + 180 + unit(key, seg, 6) * 180


def _in_inference_burst(key: int, t: int) -> bool:
    seg, offset = divmod(t, 900)
    start, end = _inference_burst(key, seg)
    if start <= offset < end:
        return True
    return unit(key, t // 60, 7) < 0.15


def gpu_util(profile: str, key: int, gpu: int, t: int, gpu_idle: bool = False) -> float:
    bucket = t // 15
    r = unit(key, gpu, bucket, 3)
    if profile == "idle" or (profile == "partial" and gpu_idle):
        return round(r * 2.0, 2)
    if profile in GPU_WAITING:
        return round(r * 3.0, 2)
    if profile == "inference":
        if _in_inference_burst(key, t):
            return round(55 + r * 40, 2)
        return round(3 + r * 9, 2)
    # trainer, and the busy GPUs of "partial"
    if _in_trainer_dip(key, t):
        return round(7 + r * 6, 2)
    return round(88 + r * 10, 2)


def gpu_mem_util(profile: str, key: int, gpu: int, t: int, gpu_idle: bool = False) -> float:
    r = unit(key, gpu, t // 15, 4)
    if profile == "partial" and gpu_idle:
        return round(r * 1.5, 2)
    if profile == "idle":
        return round(2 + r * 3, 2)
    if profile in GPU_WAITING:
        return round(60 + r * 10, 2)
    if profile == "inference":
        return round(45 + r * 10, 2)
    return round(72 + r * 12, 2)


def cpu_per_core(profile: str, key: int, t: int) -> float:
    """Average utilization of one core; the API reports it summed over cores (see wire.py)."""
    r = unit(key, t // 15, 8)
    if profile == "idle":
        return 1 + r * 2
    if profile == "dataload":
        return 70 + r * 20
    if profile == "upload":
        return 20 + r * 15
    if profile == "inference":
        return (35 if _in_inference_burst(key, t) else 4) + r * 10
    if _in_trainer_dip(key, t):
        return 75 + r * 15
    return 25 + r * 20


def mem_util(profile: str, key: int, t: int) -> float:
    r = unit(key, t // 15, 9)
    base = {"idle": 22.0, "inference": 48.0}.get(profile, 60.0)
    return round(base + r * 8, 2)


def root_disk_util(key: int, t: int) -> float:
    return round(20 + unit(key, 10) * 30 + unit(key, t // 3600, 11) * 0.5, 2)
