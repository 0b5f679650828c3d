"""The shipped knowledge base, packed for reading: the same records, each shared part stored once.

``expt/kb/records.jsonl.gz`` stays the knowledge base (JSON lines, one record each, readable with zcat and jq).
Its records repeat themselves: each dataset's meta-features (1.2 kB) and description are in every one of its
~70 records, each configuration's runnable config and model description in every one of its ~250. Parsing the
64 MB that decompress to took 0.4-0.5 s of `expt recommend`'s 1 s budget (issue 24), for 18,560 records. The
packed file, written beside it whenever the knowledge base is compacted, stores each distinct shared value once
and the per-record parts (scores, times, ids that differ from the rule) per record: a tenth of the bytes to
parse.

It is a cache, never the truth: it names the SHA-256 of the records file it was packed from, and
:func:`expt.meta.records.read_kb` reads it only when that matches (otherwise, the records file as before). The
records it gives equal the records file's, key for key; their shared parts are shared objects, so read them,
do not change them (nothing in expt does: what needs a changed copy, such as ``protocol_of``, copies).
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMAT = 1
# Top-level parts that repeat across records; "model" is shared without its per-record n_parameters.
SHARED = ("config", "dataset", "evaluation", "expt_version", "meta_features", "meta_features_version", "metric",
          "protocol", "schema", "seed", "source")


def packed_path(records_path: Path) -> Path:
    return records_path.with_name(records_path.name.removesuffix(".jsonl.gz") + ".packed.json.gz")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _kb_id(record: dict[str, Any]) -> str | None:
    try:
        return f"kb/{record['dataset']['fingerprint']}/{record['model']['config_key']}"
    except (KeyError, TypeError):
        return None


def pack(records: Iterable[dict[str, Any]], source: bytes) -> bytes:
    """The packed form of ``records``, read from the (gzipped) bytes ``source``; deterministic bytes."""
    import orjson

    values: list[Any] = []
    index: dict[bytes, int] = {}

    def ref(value: Any) -> int:  # noqa: ANN401 - any JSON value
        key = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        if key not in index:
            index[key] = len(values)
            values.append(value)
        return index[key]

    rows = []
    for record in records:
        row: dict[str, Any] = {"r": {k: ref(record[k]) for k in SHARED if k in record},
                               "v": {k: v for k, v in record.items() if k not in SHARED and k not in ("model", "id")}}
        model = record.get("model")
        if isinstance(model, dict):
            row["m"] = ref({k: v for k, v in model.items() if k != "n_parameters"})
            if "n_parameters" in model:
                row["n"] = model["n_parameters"]
        elif "model" in record:
            row["v"]["model"] = model
        if "id" in record and record["id"] != _kb_id(record):
            row["id"] = record["id"]
        rows.append(row)
    body = {"format": FORMAT, "source_sha256": digest(source), "values": values, "rows": rows}
    return gzip.compress(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), mtime=0)


def unpack(packed: bytes, source: bytes) -> list[dict[str, Any]] | None:
    """The records, or None where the packed file is not of ``source`` (stale, another format, unreadable)."""
    import gc

    import orjson

    collecting = gc.isenabled()
    gc.disable()  # ~500,000 new containers, none of them garbage: the cyclic collector's passes were a third of it
    try:
        body = orjson.loads(gzip.decompress(packed))
        if body.get("format") != FORMAT or body.get("source_sha256") != digest(source):
            return None
        values = body["values"]
        out = []
        for row in body["rows"]:
            record = dict(row["v"])
            for key, i in row["r"].items():
                record[key] = values[i]
            if "m" in row:
                model = dict(values[row["m"]])
                if "n" in row:
                    model["n_parameters"] = row["n"]
                record["model"] = model
            kb_id = row.get("id") or _kb_id(record)
            if kb_id is not None:
                record["id"] = kb_id
            out.append(record)
        return out
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, OSError, EOFError):
        return None
    finally:
        if collecting:
            gc.enable()


def write_packed(records_path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Pack ``records``, those the gzipped records file at ``records_path`` gives when read
    (``expt.meta.records.parse_records``), beside it; returns the packed file's path."""
    source = records_path.read_bytes()
    out = packed_path(records_path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(pack(records, source))
    tmp.replace(out)
    return out
