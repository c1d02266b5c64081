"""repair: un-commit every damaged entry so the next run of its stage redoes exactly it.

``verify`` finds the damage; for each entry it blames (a chunk failing its checksum, a short
or missing file, a torn or refused record, shapes or values that disagree with the record),
``repair`` takes that part's writer lock (so no live writer races it), deletes the record
first -- durably: after that the entry is not committed, whatever else happens -- then the
entry folder, and records the cause as a failure of that key (cleared when it commits again).
The stage runners decide what to do from the records, so they redo exactly these keys.
Leftover temp files and orphan folders of the locked parts are removed as well. Nothing that
verify did not blame is touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from thinkjepa.cache_schema.schema import (
    CacheError,
    dumps,
    failure_path,
    parse_record,
    record_path,
)
from thinkjepa.cache_schema.store import open_backend
from thinkjepa.cache_schema.verify import Problem, verify

ENTRY_CODES = frozenset({"record", "missing", "shape", "corrupt", "nonfinite", "content"})
"""Problems that make an entry untrustworthy: repair un-commits it."""

CLEANUP_CODES = frozenset({"partial", "orphan"})


@dataclass
class RepairReport:
    problems: list[Problem]
    uncommitted: dict[str, list[str]] = field(default_factory=dict)
    """``{key: [causes]}`` of the entries un-committed."""
    removed: list[str] = field(default_factory=list)
    """Temp files and orphan folders deleted."""
    left: list[Problem] = field(default_factory=list)
    """Problems repair does not act on (schema, duplicates)."""

    def to_dict(self) -> dict:
        return {"problems": [p.to_dict() for p in self.problems], "uncommitted": self.uncommitted,
                "removed": self.removed, "left": [p.to_dict() for p in self.left]}


def repair(url: str, check_data: bool = True, progress: Callable[[int, int], None] | None = None,
           problems: list[Problem] | None = None) -> RepairReport:
    """Verify the cache at ``url`` (or act on ``problems`` of an earlier verify) and un-commit
    what it blames. Raises CacheError when a live writer holds a part that needs repair."""
    if problems is None:
        problems = verify(url, check_data=check_data, progress=progress)
    report = RepairReport(problems)
    by_part: dict[str, list[Problem]] = {}
    for p in problems:
        if (p.code in ENTRY_CODES and p.key and p.part) or (p.code in CLEANUP_CODES and p.part and p.file):
            by_part.setdefault(p.part, []).append(p)
        else:
            report.left.append(p)
    b = open_backend(url)
    for part, todo in sorted(by_part.items()):
        with b.lock(part):
            for p in todo:
                if p.code in ENTRY_CODES:
                    _uncommit(b, part, p, report)
            for p in todo:
                if p.code == "partial":
                    b.delete(p.file)
                    report.removed.append(p.file)
                elif p.code == "orphan":
                    b.delete_tree(p.file)
                    report.removed.append(p.file)
    return report


def _uncommit(b, part: str, p: Problem, report: RepairReport) -> None:
    key = p.key
    causes = report.uncommitted.setdefault(key, [])
    causes.append(str(p))
    if len(causes) > 1:
        return  # already un-committed for an earlier problem
    rel = record_path(part, key)
    raw = b.get(rel)
    path = None
    try:
        path = parse_record(raw, part, key, rel)["path"]
    except CacheError:
        pass  # torn or refused: its path is not followed
    b.delete(rel, durable=True)
    if path is not None:  # checked by parse_record: an entry folder of this part
        b.delete_tree(path)
    b.put_atomic(failure_path(part, key), dumps({
        "key": key, "part": part, "at": time.time(),
        "reason": f"repair: un-committed, {p.code}: {p.detail}" + (f" [{p.file}]" if p.file else "")}))
