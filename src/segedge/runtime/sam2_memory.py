"""SAM 2's memory bank rules, as pure functions: which past frames and object pointers a frame attends to.

Ports of ``SAM2Base._prepare_memory_conditioned_features`` (frame and pointer selection, temporal
positions) and ``sam2_utils.select_closest_cond_frames`` / ``get_1d_sine_pe``, for one object. Frame
indices are video frame numbers; "cond" frames are the ones the user prompted (conditioning frames),
"non-cond" frames the ones tracking produced.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MemoryPlan:
    """What one frame attends to. ``frames``: ``(frame index, t_pos)`` of each memory frame, cond
    frames first (t_pos 0), then the recent frames (t_pos 1 = oldest ... num_maskmem - 1 = the previous
    frame); ``pointers``: ``(frame index, temporal distance)`` of each object pointer, in SAM 2's order."""

    frames: tuple[tuple[int, int], ...]
    pointers: tuple[tuple[int, int], ...]
    max_ptrs: int  # min(num_frames, max_obj_ptrs_in_encoder): the pointers' temporal normaliser + 1


def select_closest_cond_frames(frame_idx: int, cond: list[int], max_cond: int) -> tuple[list[int], list[int]]:
    """``(selected, unselected)`` cond frame indices: all of them when ``max_cond`` is -1 or not
    exceeded; otherwise the closest before ``frame_idx``, the closest at or after it, then the
    temporally closest others up to ``max_cond`` (sam2's rule, which needs ``max_cond >= 2``)."""
    if max_cond == -1 or len(cond) <= max_cond:
        return list(cond), []
    if max_cond < 2:
        raise ValueError("SAM 2 selects at least 2 conditioning frames")
    selected: list[int] = []
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected.append(before)
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected.append(after)
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    selected += rest[: max_cond - len(selected)]
    return selected, [t for t in cond if t not in selected]


def memory_plan(
    frame_idx: int,
    cond: list[int],
    tracked: set[int] | dict,
    *,
    num_maskmem: int,
    max_obj_ptrs: int,
    num_frames: int | None,
    reverse: bool = False,
    stride: int = 1,
    max_cond: int = -1,
    only_past_ptrs: bool = True,
    signed_tpos: bool = True,
) -> MemoryPlan:
    """The memory frames and pointers for tracking ``frame_idx`` (not an initial conditioning frame).

    ``cond``: the object's cond frame indices (insertion order, as sam2's dict keeps them);
    ``tracked``: the frames with a non-cond output in the bank. ``num_frames`` None: a stream of
    unknown length (pointers then reach back ``max_obj_ptrs - 1`` frames)."""
    selected, unselected = select_closest_cond_frames(frame_idx, cond, max_cond)
    frames = [(t, 0) for t in selected]
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos  # frames before the current one
        if t_rel == 1:
            prev = frame_idx + 1 if reverse else frame_idx - 1
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        if prev in tracked or prev in unselected:
            frames.append((prev, t_pos))
    max_ptrs = min(num_frames, max_obj_ptrs) if num_frames is not None else max_obj_ptrs
    sign = -1 if reverse else 1
    if only_past_ptrs:
        ptr_cond = [t for t in selected if (t >= frame_idx if reverse else t <= frame_idx)]
    else:
        ptr_cond = list(selected)
    pointers = [(t, (frame_idx - t) * sign if signed_tpos else abs(frame_idx - t)) for t in ptr_cond]
    for t_diff in range(1, max_ptrs):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        if t in tracked or t in unselected:
            pointers.append((t, t_diff))
    return MemoryPlan(tuple(frames), tuple(pointers), max_ptrs)


def memory_reach(num_maskmem: int, max_obj_ptrs: int, stride: int = 1) -> int:
    """How many frames back :func:`memory_plan` can look: memory frames reach ``(num_maskmem - 1) * stride`` (plus
    one stride of rounding), pointers ``max_obj_ptrs - 1`` frames. SAM 2.1 defaults: 16."""
    return max(num_maskmem * stride, max_obj_ptrs)


def frames_to_forget(tracked, cond, current: int, keep: int, reach: int) -> list[int]:
    """Which of an object's ``tracked`` frames (non-cond outputs) to drop: all but the ``keep`` nearest ``current``
    (the frame just tracked) and those within ``reach`` of a prompted (``cond``) frame. The second kind stays (at
    most ``2 * reach`` per prompted frame) so that a later pass from a prompted frame, the other way or again, finds
    the bank SAM 2 would (it keeps every frame)."""
    nearest = set(sorted(tracked, key=lambda t: (abs(t - current), t))[:keep])
    cond = list(cond)
    return sorted(t for t in tracked if t not in nearest and all(abs(t - c) > reach for c in cond))


def sine_pe(positions: np.ndarray, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """``get_1d_sine_pe``: ``positions (N,)`` -> ``(N, dim)`` float32, sines then cosines."""
    half = dim // 2
    dim_t = np.arange(half, dtype=np.float32)
    dim_t = np.float32(temperature) ** (2 * (dim_t // 2) / np.float32(half))
    angles = np.asarray(positions, dtype=np.float32)[:, None] / dim_t.astype(np.float32)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1).astype(np.float32)


def pointer_tpos(plan: MemoryPlan, dim: int) -> np.ndarray:
    """The sine encodings ``(len(plan.pointers), dim)`` of the pointers' temporal distances, normalised by
    ``max_ptrs - 1`` as SAM 2 does."""
    if not plan.pointers:
        return np.zeros((0, dim), np.float32)
    dist = np.array([d for _, d in plan.pointers], dtype=np.float32)
    return sine_pe(dist / np.float32(max(plan.max_ptrs - 1, 1)), dim)


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even as ``torch.Tensor.to(torch.bfloat16)``:
    SAM2VideoPredictor stores every memory frame so (half the bytes of float32)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bf16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> the float32 values they stand for (exact)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


class TrackedFrames:
    """Which frames an object was tracked on, and whether last in reverse (SAM2VideoPredictor's
    ``frames_tracked_per_obj``), kept as runs of consecutive frames with the same direction: a pass adds to one
    run, so memory grows with the number of passes, not with frames (a camera tracked for days stays small).

    >>> tracked = TrackedFrames()
    >>> for n in range(10, 20): tracked[n] = False
    >>> tracked[15] = True
    >>> tracked.runs, 15 in tracked, tracked[14], tracked[15], 20 in tracked
    ([(10, 14, False), (15, 15, True), (16, 19, False)], True, False, True, False)
    """

    def __init__(self) -> None:
        self.runs: list[tuple[int, int, bool]] = []  # (first, last, reverse), sorted and disjoint

    def _find(self, n: int) -> int:
        """Index of the first run whose last frame is >= n (len(runs) when none)."""
        return bisect_left(self.runs, n, key=lambda run: run[1])

    def __contains__(self, n: int) -> bool:
        i = self._find(n)
        return i < len(self.runs) and self.runs[i][0] <= n

    def __getitem__(self, n: int) -> bool:
        i = self._find(n)
        if i == len(self.runs) or self.runs[i][0] > n:
            raise KeyError(n)
        return self.runs[i][2]

    def __setitem__(self, n: int, reverse: bool) -> None:
        reverse = bool(reverse)
        i = self._find(n)
        pieces = [(n, n, reverse)]
        lo = hi = i  # runs[lo:hi] are replaced by the merged pieces
        if i < len(self.runs) and self.runs[i][0] <= n:  # n is inside run i: split it around n
            first, last, value = self.runs[i]
            pieces = [(first, n - 1, value)] * (first < n) + pieces + [(n + 1, last, value)] * (n < last)
            hi = i + 1
        if lo > 0:  # the run before may touch the first piece
            lo -= 1
            pieces.insert(0, self.runs[lo])
        if hi < len(self.runs):
            pieces.append(self.runs[hi])
            hi += 1
        merged: list[tuple[int, int, bool]] = []
        for first, last, value in pieces:
            if merged and merged[-1][2] == value and merged[-1][1] + 1 == first:
                merged[-1] = (merged[-1][0], last, value)
            else:
                merged.append((first, last, value))
        self.runs[lo:hi] = merged

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last, _ in self.runs)


def memory_feed(plan: MemoryPlan, find, video: dict, slots: tuple[int, int], grid: int) -> dict[str, np.ndarray]:
    """The memory-attention graph's bank inputs for ``plan`` (:func:`memory_plan`), padded to the graph's ``slots``
    ``(frames, pointers)``: ``memory (F, mem_dim, grid, grid)`` float32 from each planned frame's bf16 memory (EdgeTAM's
    ``(F, 512, mem_dim)``: ``video["memory_shape"]`` when given),
    ``memory_tpos (F,)`` int64 (SAM 2's ``num_maskmem - t_pos - 1``), ``memory_valid (F,)``, ``obj_ptrs (P, hidden)``,
    ``obj_ptr_tpos (P, tpos_dim)``, ``obj_ptr_valid (P,)`` (1 for a used slot). ``find(t)``: frame ``t``'s output
    (its ``maskmem`` and ``obj_ptr``); ``video``: the folder's ``params.video``."""
    frame_slots, pointer_slots = slots
    memory = np.zeros((frame_slots, *video.get("memory_shape", (video["mem_dim"], grid, grid))), np.float32)
    tpos = np.zeros(frame_slots, np.int64)
    valid = np.zeros(frame_slots, np.float32)
    for i, (t, t_pos) in enumerate(plan.frames):
        memory[i] = from_bf16(find(t).maskmem)
        tpos[i] = video["num_maskmem"] - t_pos - 1
        valid[i] = 1
    ptrs = np.zeros((pointer_slots, video["hidden_dim"]), np.float32)
    ptr_tpos = np.zeros((pointer_slots, video["tpos_dim"]), np.float32)
    ptr_valid = np.zeros(pointer_slots, np.float32)
    k = len(plan.pointers)
    for i, (t, _) in enumerate(plan.pointers):
        ptrs[i] = find(t).obj_ptr
    ptr_tpos[:k] = pointer_tpos(plan, video["tpos_dim"])
    ptr_valid[:k] = 1
    return {
        "memory": memory,
        "memory_tpos": tpos,
        "memory_valid": valid,
        "obj_ptrs": ptrs,
        "obj_ptr_tpos": ptr_tpos,
        "obj_ptr_valid": ptr_valid,
    }
