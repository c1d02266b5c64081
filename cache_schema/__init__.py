"""The feature caches' on-disk contract (layout in ``schema``): write, read, verify, stats.

Nothing outside this package touches cache paths or Zarr internals.
"""

from thinkjepa.cache_schema.reader import CacheReader
from thinkjepa.cache_schema.repair import RepairReport, repair
from thinkjepa.cache_schema.schema import (
    SCHEMA_VERSION,
    TOKEN_GENERATED,
    TOKEN_TEXT,
    TOKEN_VISION,
    CacheError,
    JEPAEntry,
    RecordError,
    SchemaMismatchError,
    StoreMeta,
    VLMEntry,
    escape_key,
    unescape_key,
)
from thinkjepa.cache_schema.stats import cache_stats
from thinkjepa.cache_schema.store import PartLock, lock_part, store_exists
from thinkjepa.cache_schema.verify import Problem, verify
from thinkjepa.cache_schema.writer import CacheWriter

__all__ = [
    "SCHEMA_VERSION",
    "TOKEN_GENERATED",
    "TOKEN_TEXT",
    "TOKEN_VISION",
    "CacheError",
    "CacheReader",
    "CacheWriter",
    "JEPAEntry",
    "PartLock",
    "Problem",
    "RecordError",
    "RepairReport",
    "SchemaMismatchError",
    "StoreMeta",
    "VLMEntry",
    "cache_stats",
    "escape_key",
    "lock_part",
    "repair",
    "store_exists",
    "unescape_key",
    "verify",
]
