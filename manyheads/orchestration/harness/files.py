"""Reading and writing the files the harness works with: JSONL inputs, tabular dataset exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from manyheads.errors import ConfigError


def read_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a malformed line is a ``ConfigError`` naming the file and line."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            missing = [k for k in required if not isinstance(row, dict) or k not in row]
            if missing:
                raise ConfigError(f"{path}:{number}: missing {', '.join(missing)}",
                                  hint=f"each line needs {', '.join(required)}")
            yield {**row, "_line": number}


def tabular(payloads: list[dict[str, Any]], out: Path, stem: str) -> list[str]:
    """``<stem>.parquet`` and an HF ``datasets`` folder; nested fields go as JSON text."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v
             for k, v in item.items()} for item in payloads]
    pq.write_table(pa.Table.from_pylist(rows), out / f"{stem}.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(out / "hf_dataset"))
    return ["parquet", "hf_datasets"]
