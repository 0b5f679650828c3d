"""The build's durable pieces: one gzipped file of records per finished dataset, kept in the repository.

A build of several hours must survive being stopped anywhere and continue on a fresh clone on another machine
(issue 24). Its working folder (``outputs/kb``: records.jsonl, done.txt, the sampled tables) is scratch; a
dataset whose every pair is done is written to ``recipes/kb/shards/<name>.jsonl.gz`` (sorted, gzipped with a
fixed timestamp, so the same records give the same bytes), and with ``--commit`` committed at once, that file
alone. A build starts by importing the shards into its working folder, so their pairs count as done and do not
run again. A dataset half-built when the build stopped has no shard and runs again whole on the next machine, so
the records of one dataset never mix two machines' meta-features.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from expt.kb.protocol import ROOT

SHARDS = ROOT / "recipes" / "kb" / "shards"


def read_shard(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines() if line.strip()]


def import_shards(shards: Path, build_dir: Path) -> int:
    """Append the shards' records the build folder lacks (by id); returns how many."""
    from expt.meta.records import RecordStore

    records = [r for path in sorted(shards.glob("*.jsonl.gz")) for r in read_shard(path)]
    return RecordStore(build_dir / "records.jsonl").append(records) if records else 0


def pair_of(record: dict[str, Any]) -> str:
    """A build record's pair, as done.txt lists it (:func:`expt.kb.protocol.pair_key`)."""
    return f"{record['dataset']['name']}\t{record['source']['config']}\t{record['id'].removeprefix('kb-build/')}"


def write_shard(shards: Path, name: str, records: list[dict[str, Any]]) -> Path | None:
    """Write a dataset's records as its shard; None where the shard already holds exactly these."""
    data = "".join(json.dumps(r, sort_keys=True) + "\n"
                   for r in sorted(records, key=lambda r: (r["source"]["config"], r["id"]))).encode()
    path = shards / f"{name}.jsonl.gz"
    if path.is_file() and gzip.decompress(path.read_bytes()) == data:
        return None
    shards.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(data)
    tmp.replace(path)
    return path


def commit(path: Path, message: str, tries: int = 5) -> bool:
    """Commit this one file (nothing else that is staged or changed); retried while another git holds the index."""
    for attempt in range(tries):
        added = subprocess.run(["git", "add", "--", str(path)], cwd=ROOT, capture_output=True, text=True)
        done = added.returncode == 0 and subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", str(path)], cwd=ROOT, capture_output=True, text=True
        ).returncode == 0
        if done:
            return True
        time.sleep(1 + attempt)
    return False
