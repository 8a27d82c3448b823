"""JAX's persistent compilation cache for the CLI, and a count of what each compile found in it.

A model's programs took 2-45 s to compile on a 2-core CPU; a later run of the same shapes (another
seed, a resumed run, `evaluate` of a run's split) loads them from disk instead. Results stay
honest: `Run.compile` counts the programs loaded from the cache, results.json records the count
and the report marks such compile times, since a load is not a compile.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
import threading
from pathlib import Path

from flaxbench.errors import FlaxbenchError
from flaxbench.host_cpu import cpuinfo_value

ENV_VAR = "FLAXBENCH_COMPILATION_CACHE"
OFF_VALUES = ("off", "0", "false", "no", "none")
# Least-recently-used entries are deleted past this; one model's programs took 0.6-3.7 MB on CPU.
MAX_BYTES = 4 * 2 ** 30
# JAX's own setting of the least compile time worth caching; flaxbench keeps every program unless it is set
MIN_COMPILE_TIME_VAR = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
# JAX records this for every program it looks up in the cache ('cache_misses' only for those it writes)
_LOOKUP_EVENT = "/jax/compilation_cache/compile_requests_use_cache"


def host_tag() -> str:
    """'<machine>-<hash of the CPU's instruction-set flags>': XLA:CPU programs only load on a matching CPU.

    Keeps the entries of different CPUs apart in a home directory shared by a cluster's nodes,
    where they would otherwise replace each other at every run.
    """
    flags = cpuinfo_value("flags", "Features") or platform.processor()
    digest = hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12]
    return f"{platform.machine() or 'unknown'}-{digest}"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME (or ~/.cache) / flaxbench / xla / host_tag()."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "flaxbench" / "xla" / host_tag()


def enable_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache as FLAXBENCH_COMPILATION_CACHE says; returns its directory.

    Unset: default_cache_dir() (a warning and no cache if it cannot be used), unless
    JAX_COMPILATION_CACHE_DIR already chose one (then that); a directory: that one, or a
    FlaxbenchError; 'off': no cache. Every program is kept, however quickly it compiled, unless
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise. Call before the first compile of the process.
    """
    import jax

    setting = os.environ.get(ENV_VAR, "").strip()
    if setting.lower() in OFF_VALUES:
        disable_compilation_cache()
        return None
    # JAX writes only programs that took over a second to compile. A random init compiles one small
    # program per weight shape (15 s in all for GoogLeNet on a 2-core CPU), a run its epoch plan and
    # index slices: with every program kept, a one-epoch GoogLeNet run took 23 s the second time, not 42.
    if MIN_COMPILE_TIME_VAR not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if not setting and jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    path = Path(setting).expanduser() if setting else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        problem = f"cannot use '{path}' as the compilation cache ({e.strerror or e})"
        if setting:
            raise FlaxbenchError(f"{ENV_VAR}: {problem}; set {ENV_VAR} to a writable directory, or to 'off'") from None
        # the default place (a read-only home, say) must not stop a run that never asked for a cache
        logging.warning("%s, so every program is compiled; set %s to a writable directory, or to 'off'",
                        problem, ENV_VAR)
        disable_compilation_cache()
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # JAX's default is no limit; its eviction needs the filelock package (a dependency of flaxbench)
    if jax.config.jax_compilation_cache_max_size == -1 and importlib.util.find_spec("filelock"):
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path


def cache_note(hits: int, misses: int) -> str:
    """' (3 programs loaded from the compilation cache, 2 compiled)', or '' when none was loaded."""
    programs = "program" if hits == 1 else "programs"
    return f" ({hits} {programs} loaded from the compilation cache, {misses} compiled)" if hits else ""


def disable_compilation_cache() -> None:
    """Compile every program, even where JAX_COMPILATION_CACHE_DIR names a cache: for timing compiles."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)


class CacheLookups:
    """Counts the programs loaded from the persistent cache (hits) and compiled (misses) inside `with`.

    Both stay 0 without a cache directory (JAX, enabled by default, reports a lookup per program even
    then), so results.json counts loads and compiles only where a cache is in use.
    """

    _active: list[CacheLookups] = []
    _lock = threading.Lock()
    _listening = False

    def __init__(self) -> None:
        self.hits = 0
        self.lookups = 0

    @property
    def misses(self) -> int:
        """Programs looked up and not found, so compiled."""
        return self.lookups - self.hits

    def __enter__(self) -> CacheLookups:
        import jax

        if not (jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir):
            return self
        with CacheLookups._lock:
            if not CacheLookups._listening:
                import jax.monitoring

                jax.monitoring.register_event_listener(CacheLookups._record)
                CacheLookups._listening = True
            CacheLookups._active.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with CacheLookups._lock:
            if self in CacheLookups._active:
                CacheLookups._active.remove(self)

    @staticmethod
    def _record(event: str, **_: object) -> None:
        if event not in (_HIT_EVENT, _LOOKUP_EVENT):
            return
        with CacheLookups._lock:
            for counter in CacheLookups._active:
                if event == _HIT_EVENT:
                    counter.hits += 1
                else:
                    counter.lookups += 1
