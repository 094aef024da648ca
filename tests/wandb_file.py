"""Read an offline W&B run's .wandb file (a LevelDB-style log of protobuf
records), so tests can check what a run logged without a server."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = struct.Struct("<IHB")  # crc32c, length, chunk type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, "not a .wandb file"
    out, pending, pos = [], b"", 7
    while pos + HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < HEADER.size:  # too little room left in the block: padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = HEADER.unpack_from(data, pos)
        chunk = data[pos + HEADER.size : pos + HEADER.size + length]
        pos += HEADER.size + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def finished_records(path: Path, timeout: float = 60.0) -> list[pb.Record]:
    """The records once the run's exit record is on disk: W&B's service process
    writes the file on its own after `run.finish()` has returned."""
    deadline = time.monotonic() + timeout
    while True:
        found = records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def history(path: Path) -> list[dict]:
    """One dict per logged step: key -> decoded value."""
    rows = []
    for r in finished_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in r.history.item})
    return rows


def run_file(out_dir: Path) -> Path:
    """The .wandb file of the one offline W&B run logged inside `out_dir` (a job's output dir)."""
    (path,) = Path(out_dir).glob("wandb/offline-run-*/run-*.wandb")
    return path


def run_record(path: Path) -> pb.RunRecord:
    return next(r.run for r in finished_records(path) if r.WhichOneof("record_type") == "run")
