"""The persistent compilation cache: later runs load their programs, train the same, and say so."""

import json
import os
import re
import subprocess
import sys

import jax
import pytest

from flaxbench.compile_cache import MAX_BYTES, disable_compilation_cache, enable_compilation_cache, host_tag
from flaxbench.errors import FlaxbenchError
from tests.helpers import REPO, run_cli
from tests.test_cli import TINY

CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_enable_compilation_cache", "jax_compilation_cache_max_size",
                 "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture
def jax_cache_options():
    """Restores JAX's cache options after the test (no program is compiled while they change)."""
    saved = {name: getattr(jax.config, name) for name in CACHE_OPTIONS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def test_a_directory_becomes_jax_cache_with_a_size_bound(tmp_path, monkeypatch, jax_cache_options):
    monkeypatch.setenv("FLAXBENCH_COMPILATION_CACHE", str(tmp_path / "xla"))
    jax.config.update("jax_compilation_cache_max_size", -1)
    assert enable_compilation_cache() == tmp_path / "xla"
    assert (tmp_path / "xla").is_dir()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    assert jax.config.jax_compilation_cache_max_size == MAX_BYTES


def test_unset_it_defaults_to_the_user_cache_unless_jax_has_one(tmp_path, monkeypatch, jax_cache_options):
    monkeypatch.delenv("FLAXBENCH_COMPILATION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", None)
    assert enable_compilation_cache() == tmp_path / "flaxbench" / "xla" / host_tag()
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))  # as JAX_COMPILATION_CACHE_DIR does
    assert enable_compilation_cache() == tmp_path / "theirs"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "theirs")


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false"])
def test_off_turns_even_jax_own_cache_off(value, tmp_path, monkeypatch, jax_cache_options):
    monkeypatch.setenv("FLAXBENCH_COMPILATION_CACHE", value)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
    jax.config.update("jax_enable_compilation_cache", True)
    assert enable_compilation_cache() is None
    assert not jax.config.jax_enable_compilation_cache


def test_an_unusable_directory_is_one_clear_error(tmp_path, monkeypatch, jax_cache_options):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("FLAXBENCH_COMPILATION_CACHE", str(tmp_path / "a_file" / "xla"))
    with pytest.raises(FlaxbenchError, match=r"FLAXBENCH_COMPILATION_CACHE: cannot use '.*a_file/xla'.*'off'"):
        enable_compilation_cache()


def test_an_unusable_default_place_warns_and_compiles_everything(tmp_path, monkeypatch, caplog, jax_cache_options):
    (tmp_path / "a_file").write_text("")
    monkeypatch.delenv("FLAXBENCH_COMPILATION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a_file"))  # a read-only home, say
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", True)
    assert enable_compilation_cache() is None
    assert not jax.config.jax_enable_compilation_cache
    assert "every program is compiled" in caplog.text and "FLAXBENCH_COMPILATION_CACHE" in caplog.text


@pytest.mark.parametrize("user_setting", [None, "2.5"])
def test_quickly_compiled_programs_are_kept_unless_jax_is_told_otherwise(user_setting, tmp_path, monkeypatch,
                                                                        jax_cache_options):
    monkeypatch.setenv("FLAXBENCH_COMPILATION_CACHE", str(tmp_path / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.5 if user_setting else 1.0)  # as JAX read it
    if user_setting:
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", user_setting)
    else:
        monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    enable_compilation_cache()
    assert jax.config.jax_persistent_cache_min_compile_time_secs == (2.5 if user_setting else 0.0)


def test_benchmarks_can_turn_the_cache_off(jax_cache_options):
    jax.config.update("jax_enable_compilation_cache", True)
    disable_compilation_cache()
    assert not jax.config.jax_enable_compilation_cache


def test_without_a_cache_directory_no_lookup_is_counted():
    # JAX enables its cache by default and reports a lookup per program even with no directory to
    # look in; a fresh process, since JAX decides once per process whether the cache is used.
    script = (
        "import jax; from flaxbench.compile_cache import CacheLookups\n"
        "assert jax.config.jax_enable_compilation_cache and not jax.config.jax_compilation_cache_dir\n"
        "with CacheLookups() as lookups:\n"
        "    jax.jit(lambda x: x * 3 + 1).lower(1.0).compile()\n"
        "print(lookups.hits, lookups.misses)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**env, "JAX_PLATFORMS": "cpu"}, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]


def test_a_second_run_loads_its_programs_from_the_cache_and_trains_the_same(tmp_path):
    # Unset, as for a user: the default place under XDG_CACHE_HOME. This tiny model's programs each
    # compile in under a second, which JAX alone would not cache.
    env = {"FLAXBENCH_COMPILATION_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "home_cache")}
    runs = {}
    for name in ("first", "second"):
        proc = run_cli(*TINY, f"--workdir={tmp_path / name / 'demo'}", env=env)
        assert proc.returncode == 0, proc.stderr
        runs[name] = (proc, json.loads((tmp_path / name / "demo" / "results.json").read_text()))
    (first_proc, first), (second_proc, second) = runs["first"], runs["second"]
    cache_dir = tmp_path / "home_cache" / "flaxbench" / "xla" / host_tag()
    assert any(path.name.startswith("jit_step") for path in cache_dir.iterdir())

    assert first["compile_cache_hits"] == 0 and first["compile_cache_misses"] > 0
    assert "compilation cache" not in first_proc.stdout
    said = re.search(r"\((\d+) programs? loaded from the compilation cache, (\d+) compiled\)", second_proc.stdout)
    assert said and second["compile_cache_hits"] > 0
    assert (int(said[1]), int(said[2])) == (second["compile_cache_hits"], second["compile_cache_misses"])
    assert (second["compile_cache_hits"], second["compile_cache_misses"]) == (first["compile_cache_misses"], 0)
    for key in ("history", "test_loss", "test_accuracy", "test_predictions", "confusion_matrix"):
        if key == "history":  # timings differ; what was learned must not
            strip = lambda history: [{k: v for k, v in e.items() if "time" not in k and "per_second" not in k}
                                     for e in history]
            assert strip(first[key]) == strip(second[key])
        else:
            assert first[key] == second[key], key

    for name, cached in (("first", False), ("second", True)):
        report = run_cli("report", str(tmp_path / name), f"--out={tmp_path / f'report_{name}'}")
        assert report.returncode == 0, report.stderr
        markdown = (tmp_path / f"report_{name}" / "report.md").read_text()
        assert ("loading of programs from the persistent compilation cache" in markdown) == cached, name
        row = json.loads((tmp_path / f"report_{name}" / "report.json").read_text())["rows"][0]
        assert row["compile_cache_runs"] == int(cached)
