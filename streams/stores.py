"""Stage state mappings from PANTAU_STORE: a dict in memory, or RocksDB on disk (rocksdict)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import weakref
from collections.abc import ItemsView, Iterator, MutableMapping, ValuesView
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

SCHEMES = ("memory", "rocksdb")
DEFAULT_CACHE_MB = 64  # block cache per mapping: what stays in memory besides the memtables
WRITE_BUFFER_MB = 16  # one memtable; at most MAX_WRITE_BUFFERS of them per mapping
MAX_WRITE_BUFFERS = 2
# First byte of every stored value: what follows is raw bytes, or an orjson document.
TAG_BYTES = b"\x00"
TAG_JSON = b"\x01"


class StoreURLError(ValueError):
    """A PANTAU_STORE value that names no store Pantau can open."""


@dataclass(frozen=True)
class StoreSpec:
    """What a store URL asks for: the kind, the base directory (None: the default) and cache."""

    kind: str
    directory: Path | None = None
    cache_mb: int = DEFAULT_CACHE_MB


def parse_store_url(url: str) -> StoreSpec:
    """`memory://`, `rocksdb://` or `rocksdb:///some/dir`, optionally `?cache_mb=N`."""

    def bad(why: str) -> StoreURLError:
        return StoreURLError(f"PANTAU_STORE={url!r}: {why}")

    if "://" not in url:
        raise bad("must be a URL: memory:// or rocksdb:// (rocksdb:///dir?cache_mb=64)")
    parts = urlsplit(url)
    kind = parts.scheme.lower()
    if kind not in SCHEMES:
        raise bad(f"unknown store {parts.scheme!r}; use memory:// or rocksdb://")
    if parts.netloc:
        raise bad("a host is not allowed; a directory is written rocksdb:///dir")
    if parts.fragment:
        raise bad("a fragment (#...) is not allowed")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise bad(f"cannot read the query {parts.query!r}") from None
    if kind == "memory":
        if parts.path or query:
            raise bad("memory:// takes no directory or options")
        return StoreSpec("memory")
    unknown = sorted(set(query) - {"cache_mb"})
    if unknown:
        raise bad(f"unknown option(s) {', '.join(unknown)}; the only one is cache_mb")
    cache_mb = DEFAULT_CACHE_MB
    if "cache_mb" in query:
        text = query["cache_mb"][-1]
        if not text.isdigit() or not 1 <= int(text) <= 1_048_576:
            raise bad(f"cache_mb must be a whole number of MiB from 1 to 1048576, got {text!r}")
        cache_mb = int(text)
    directory = Path(parts.path) if parts.path not in ("", "/") else None
    return StoreSpec("rocksdb", directory, cache_mb)


def worker_dir(base: Path, app_id: str) -> Path:
    """This process's directory: per app id and per worker (host and process id), so workers
    on one machine, or containers sharing a volume, never open each other's files."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return base / app_id / f"{host or 'host'}-{os.getpid()}"


def default_base() -> Path:
    """Where state goes when neither the URL nor PANTAU_STATE_DIR names a directory."""
    return Path(tempfile.gettempdir()) / "pantau-state"


def open_state(settings: Any, name: str) -> MutableMapping[str, Any]:
    """A fresh, empty state mapping for one part of a stage (e.g. "features"), of the kind
    PANTAU_STORE names. RocksDB files live in <dir>/<app_id>/<host>-<pid>/<name> and are
    removed when the mapping is closed or the process exits: Kafka is the source of truth.

    Raises StoreURLError (a ValueError) naming PANTAU_STORE for a URL it cannot open."""
    spec = parse_store_url(settings.store)
    if spec.kind == "memory":
        return {}
    base = spec.directory or getattr(settings, "state_dir", None) or default_base()
    here = worker_dir(Path(base), settings.app_id)
    sweep_stale(here.parent, keep=here)
    return RocksMapping(here / name, cache_mb=spec.cache_mb)


def _locked_by_another(lock: Path) -> bool:
    """Whether another process holds RocksDB's LOCK file (never probe our own open stores:
    closing any descriptor of a file drops this process's POSIX locks on it)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def sweep_stale(app_dir: Path, keep: Path) -> list[Path]:
    """Remove the directories of workers that died without closing (killed, out of memory):
    every store in them is unlocked. Returns what it removed."""
    removed: list[Path] = []
    if not app_dir.is_dir():
        return removed
    for worker in sorted(app_dir.iterdir()):
        if worker == keep or not worker.is_dir():
            continue
        if any(_locked_by_another(store / "LOCK") for store in worker.iterdir() if store.is_dir()):
            continue
        shutil.rmtree(worker, ignore_errors=True)
        removed.append(worker)
    return removed


def encode(value: Any) -> bytes:
    """A value as stored: bytes as they are, anything else as JSON (orjson), after a tag byte."""
    if isinstance(value, bytes | bytearray | memoryview):
        return TAG_BYTES + bytes(value)
    return TAG_JSON + orjson.dumps(value)


def decode(data: bytes) -> Any:
    """The value `encode` stored (bytes come back as bytes)."""
    tag = data[:1]
    if tag == TAG_BYTES:
        return data[1:]
    if tag == TAG_JSON:
        return orjson.loads(memoryview(data)[1:])
    raise ValueError(f"stored value with unknown tag {tag!r}")


def _destroy(db: Any, path: Path, owner: int) -> None:
    """Close a store and delete its files, then its worker directory if nothing else is left
    (only in the process that opened it: a forked child exiting leaves its parent's store)."""
    if os.getpid() != owner:
        return
    with contextlib.suppress(Exception):  # already closed, or at exit: the files go anyway
        db.close()
    shutil.rmtree(path, ignore_errors=True)
    for parent in (path.parent, path.parent.parent):
        try:
            parent.rmdir()  # only when empty: other stores of this worker keep it
        except OSError:
            break


class RocksMapping(MutableMapping[str, Any]):
    """A MutableMapping of str keys over a raw-mode rocksdict.Rdict at `path` (created empty).

    Values are bytes (kept raw) or anything orjson can write (dicts, lists, numbers, strings,
    booleans, None; read back as JSON types, so tuples come back as lists). A value read is a
    copy: change it and write it back, as the stages do. Writes skip the write-ahead log: a
    crash loses the store anyway, and the worker rebuilds it from Kafka. `len()` walks every key.
    """

    def __init__(self, path: Path, cache_mb: int = DEFAULT_CACHE_MB) -> None:
        import rocksdict

        self.path = Path(path)
        if self.path.exists():  # left by a dead process that had our host and pid
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(WRITE_BUFFER_MB * 2**20)
        options.set_max_write_buffer_number(MAX_WRITE_BUFFERS)
        options.set_compression_type(rocksdict.DBCompressionType.lz4())
        options.set_keep_log_file_num(2)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(cache_mb * 2**20))
        table.set_bloom_filter(10, False)  # point lookups: most misses never touch a block
        table.set_cache_index_and_filter_blocks(True)  # index and filters count in the cache
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        self._db: Any = rocksdict.Rdict(str(self.path), options)
        writes: Any = rocksdict.WriteOptions()
        writes.disable_wal = True  # a property in rocksdict 0.3.29 (its stub says a method)
        self._db.set_write_options(writes)
        self._finalizer = weakref.finalize(self, _destroy, self._db, self.path, os.getpid())

    # ---- the mapping ------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        data = self._db.get(key.encode())
        if data is None:
            raise KeyError(key)
        return decode(data)

    def get(self, key: str, default: Any = None) -> Any:
        data = self._db.get(key.encode())
        return default if data is None else decode(data)

    def __setitem__(self, key: str, value: Any) -> None:
        self._db.put(key.encode(), encode(value))

    def __delitem__(self, key: str) -> None:
        raw = key.encode()
        if raw not in self._db:
            raise KeyError(key)
        self._db.delete(raw)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.encode() in self._db

    def __iter__(self) -> Iterator[str]:
        # A RocksDB iterator reads a snapshot: deleting while iterating is safe.
        for raw in self._db.keys():  # noqa: SIM118 (an Rdict, not a dict)
            yield raw.decode()

    def __len__(self) -> int:
        return sum(1 for _ in self._db.keys())  # noqa: SIM118

    def items(self) -> ItemsView[str, Any]:  # one pass instead of a lookup per key
        return _Items(self)

    def values(self) -> ValuesView[Any]:
        return _Values(self)

    # ---- the store --------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the memtables to files (for measuring bytes on disk)."""
        self._db.flush()

    def compact(self) -> None:
        """Compact every level (for measuring the settled size on disk)."""
        self._db.compact_range(None, None)

    def disk_bytes(self) -> int:
        """Bytes of this store's files on disk."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def close(self) -> None:
        """Close the store and delete its files (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __repr__(self) -> str:
        return f"RocksMapping({str(self.path)!r})"


class _Items(ItemsView[str, Any]):
    """items() of a RocksMapping: one iterator over keys and values together."""

    _mapping: RocksMapping

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for raw, data in self._mapping._db.items():
            yield raw.decode(), decode(data)


class _Values(ValuesView[Any]):
    """values() of a RocksMapping: one iterator, no lookup per key."""

    _mapping: RocksMapping

    def __iter__(self) -> Iterator[Any]:
        for data in self._mapping._db.values():
            yield decode(data)
