"""One corruption-benchmark result per (checkpoint, setting, corruption, severity), and the
file of finished ones that lets a stopped benchmark resume where it was.

Every condition's record is appended to `FINISHED_NAME` in the output folder as soon as it
is scored, with the identity of what produced it (checkpoint file hash, dataset, seed,
metric, ...). A later run with the same identity skips those conditions; one with another
identity is refused rather than mixed in.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from igoas.utils.errors import ConfigError
from igoas.utils.fileio import append_jsonl, read_jsonl

FINISHED_NAME = "corruptions.partial.jsonl"
ConditionKey = tuple[str, str, int]  # (setting, corruption, severity)


@dataclass
class CorruptionRecord:
    """Metrics (percent) of one checkpoint under one setting and (corruption, severity).

    The clean reference has setting and corruption "clean", the random setting corruption
    "random"; both have severity 0.
    """

    checkpoint: str
    setting: str
    corruption: str
    severity: int
    R1: float
    mAP: float
    mINP: float
    num_queries: int

    @property
    def condition(self) -> ConditionKey:
        return self.setting, self.corruption, self.severity


class FinishedConditions:
    """The records already scored by earlier runs into the same output folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self, label: str, identity: Mapping[str, Any]) -> dict[ConditionKey, CorruptionRecord]:
        """{condition: record} of `label`, made with exactly `identity`."""
        finished: dict[ConditionKey, CorruptionRecord] = {}
        for number, line in enumerate(read_jsonl(self.path) if self.path.is_file() else [], start=1):
            if line.get("checkpoint") != label:
                continue
            if line.get("identity") != dict(identity):
                differs = sorted(key for key in {**identity, **(line.get("identity") or {})}
                                 if (line.get("identity") or {}).get(key) != identity.get(key))
                raise ConfigError(f"{self.path}: holds results of {label!r} made with other settings (they differ "
                                  f"in {', '.join(differs)}); delete that file to start again, or give another --out")
            try:
                record = CorruptionRecord(**{field.name: line[field.name] for field in fields(CorruptionRecord)})
            except KeyError as err:
                raise ConfigError(f"{self.path}, record {number}: no {err.args[0]!r} field; the file is not a "
                                  "corruption benchmark's record of finished conditions: delete it") from None
            finished[record.condition] = record
        return finished

    def add(self, record: CorruptionRecord, identity: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, {"identity": dict(identity), **asdict(record)})
