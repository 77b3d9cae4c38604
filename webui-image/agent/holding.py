"""Images made before the agent knows the user: kept pod-local, moved in at the claim.

The broker routes a user to a pod the moment it claims it, but the kubelet
refreshes Downward API files on its own schedule (seconds, up to about a
minute), so the label can arrive after the first images. Until then the
WebUI saves into a pod-local holding folder; once the user is known the WebUI
is re-pointed and everything in the holding folder is moved to the same
relative place under ``/outputs/<user-slug>``. Only this pod's one user can
have made those images (single-use pods), so nothing is misattributed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

SETTLED = 1.0  # seconds since the last write before a file is moved (it may still be open)


def _free(target: Path) -> Path:
    """``target``, or ``name-1.ext``, ``name-2.ext``...: a move never overwrites."""
    if not target.exists():
        return target
    n = 1
    while (candidate := target.with_name(f"{target.stem}-{n}{target.suffix}")).exists():
        n += 1
    return candidate


def move_tree(holding: Path, folder: Path, settled: float = SETTLED) -> int:
    """Move every settled file under ``holding`` into ``folder``; returns how many moved.

    Called on every poll while claimed, so a file still being written now is
    simply moved on a later pass.
    """
    if not holding.is_dir():
        return 0
    moved, now = 0, time.time()
    for dirpath, _, filenames in os.walk(holding):
        relative = Path(dirpath).relative_to(holding)
        for name in filenames:
            source = Path(dirpath, name)
            try:
                if now - source.stat().st_mtime < settled:
                    continue
                target = _free(folder / relative / name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(source), str(target))  # across devices: copy, then unlink
            except FileNotFoundError:
                continue  # the WebUI removed it meanwhile
            moved += 1
    return moved
