"""Random-number state: seeding, and capture / restore as plain types.

Exact resume needs every stream a run draws from (Python, NumPy, torch CPU and CUDA, and
the dedicated generators such as the occlusion's) saved in a form
`torch.load(weights_only=True)` accepts; in a multi-process run every process's streams,
by rank (`state_for_rank` picks a process's own). Seeding itself is `igoas.utils.seeding`.
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import numpy as np
import torch


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every global RNG state plus the named generators, as tensors and plain types."""
    algorithm, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
        "numpy": {"algorithm": algorithm, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: generator.get_state() for name, generator in (generators or {}).items()},
    }


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> list[str]:
    """Restore what `capture_rng_state` saved; returns notes on streams that could not be restored."""
    notes = []
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["algorithm"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    elif cuda or torch.cuda.is_available():
        notes.append(f"CUDA RNG not restored: saved for {len(cuda)} device(s), "
                     f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} present now")
    saved = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if name in saved:
            generator.set_state(saved[name])
        else:
            notes.append(f"generator {name!r} not in the checkpoint; it keeps its fresh seed")
    return notes


def state_for_rank(saved: Mapping[str, Any], by_rank: Sequence[Mapping[str, Any]] | None, saved_world: int,
                   rank: int, world_size: int) -> tuple[Mapping[str, Any], bool, list[str]]:
    """The saved state process `rank` restores, whether its global streams must then be
    derived afresh, and notes for the log (the same in every process).

    `saved` is rank 0's state (all a single-process checkpoint, or one written by earlier
    versions, holds); `by_rank` every process's. Processes draw from their own streams
    (seeded by rank), so a process never takes another's: with another number of processes,
    or a rank whose state was not saved, the global streams are derived afresh. Shared
    generators (the occlusion's) are the same in every state and always restored."""
    if saved_world == world_size and by_rank is not None and len(by_rank) == world_size:
        return by_rank[rank], False, []
    if saved_world == world_size == 1:
        return saved, False, []
    if saved_world != world_size:
        note = (f"random streams saved by {saved_world} process(es), continuing with {world_size}: each "
                "process's streams are derived afresh from the seed, its rank and the iteration")
    else:
        note = ("the checkpoint holds rank 0's random streams only (an earlier version wrote it): the other "
                "processes' streams are derived afresh from the seed, their rank and the iteration")
    return saved, saved_world != world_size or rank > 0, [note]
