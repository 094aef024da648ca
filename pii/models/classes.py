"""Class ids as users type them, and their names."""

from __future__ import annotations

import re
from functools import lru_cache

from omegaconf import ListConfig

from pii.errors import ConfigError


def parse_class_ids(value, num_classes: int) -> list[int]:
    """`class_id=980` or `class_id=[980,10]` -> [980] / [980, 10], checked against the model."""
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if not values:
        raise ConfigError("class_id is empty; pass one class (class_id=980) or a list (class_id=[980,10])")
    ids = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"class_id must be an integer or a list of integers, got {v!r}; e.g. class_id=980 or class_id=[980,10]")
        if not 0 <= v < num_classes:
            raise ConfigError(f"class_id {v} is outside this model's classes 0..{num_classes - 1}")
        if v in ids:  # each class has one image file (<class_id>_<name>.png)
            raise ConfigError(f"class_id lists {v} twice; each class is inverted once per run "
                              f"(for several images of one class, sweep over seed: -m seed=0,1,2)")
        ids.append(v)
    return ids


def class_chunks(ids: list[int], per_job: int) -> list[list[int]]:
    """`ids` cut into consecutive chunks of `per_job` classes (the last may be shorter)."""
    if isinstance(per_job, bool) or not isinstance(per_job, int) or per_job < 1:
        raise ConfigError(f"classes_per_job must be a number of classes >= 1, got {per_job!r}; "
                          f"e.g. classes_per_job=5")
    return [ids[i:i + per_job] for i in range(0, len(ids), per_job)]


def job_classes(class_id, num_classes: int, per_job: int | None = None, chunk: int | None = None) -> list[int]:
    """The classes one run inverts: all of `class_id`, or with classes_per_job=N the chunk number
    `chunk` (class_chunk) of N consecutive classes; a sweep (-m) makes one job per chunk."""
    ids = parse_class_ids(class_id, num_classes)
    if per_job is None:
        if chunk is not None:
            raise ConfigError(f"class_chunk={chunk} needs classes_per_job=<classes per chunk>")
        return ids
    chunks = class_chunks(ids, per_job)
    if chunk is None:
        raise ConfigError(f"classes_per_job={per_job} splits the {len(ids)} classes into {len(chunks)} jobs: run it as "
                          f"a sweep (-m), or pick one chunk with class_chunk=0..{len(chunks) - 1}")
    if isinstance(chunk, bool) or not 0 <= chunk < len(chunks):
        raise ConfigError(f"class_chunk must be 0..{len(chunks) - 1} ({len(ids)} classes, {per_job} per job), "
                          f"got {chunk!r}")
    return chunks[chunk]


@lru_cache(maxsize=1)
def _imagenet():
    from timm.data import ImageNetInfo

    return ImageNetInfo()


def class_name(class_id: int, num_classes: int) -> str:
    """ImageNet's short name for 1000-class models, else 'class <id>'."""
    if num_classes == 1000:
        return _imagenet().index_to_description(class_id).split(",")[0].strip()
    return f"class {class_id}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def class_key(class_id: int, num_classes: int) -> str:
    """`980_volcano`: the stem of a class's image file, and its W&B key."""
    return f"{class_id}_{slug(class_name(class_id, num_classes))}"
