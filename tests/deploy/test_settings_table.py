"""The README's settings table is the generator's output, and every key in it is real."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import pytest

from lakecache import settings as settings_module
from lakecache.server.config import ServerConfig, load_config
from lakecache.settings import Settings

from .generator import SCRIPT, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_holds_the_generated_table() -> None:
    gen = settings_table()
    text = README.read_text()
    if gen.START not in text or gen.END not in text:
        pytest.fail(
            f"README.md has no settings table between {gen.START} and {gen.END}: run "
            f"`python {SCRIPT.relative_to(README.parent)}` and paste its output into README.md"
        )
    inside = text.split(gen.START, 1)[1].split(gen.END, 1)[0]
    assert inside.strip() == gen.markdown().strip(), (
        "README.md's settings table differs from the settings code: run "
        f"`python {SCRIPT.relative_to(README.parent)}` and paste its output into README.md"
    )


def test_every_field_has_a_meaning() -> None:
    for key, env, _, meaning in settings_table().rows():
        assert meaning, f"{key or env} has no meaning: add a #: comment above the field"


def test_every_settings_field_and_variable_is_in_the_table() -> None:
    table = settings_table().markdown()
    for f in fields(Settings):
        if f.name != "home":
            assert f"`[lakecache] {f.name}`" in table
    for name in settings_module._ENV:
        assert f"`{name}`" in table


def test_every_environment_variable_in_the_table_is_read(tmp_path: Path) -> None:
    env = {"LAKECACHE_HOME": str(tmp_path)}
    values = {
        "LAKECACHE_WORKERS": "3",
        "LAKECACHE_S3_RETRIES": "2",
        "LAKECACHE_ADMIN_PASSWORD": "a-long-password",
        "LAKECACHE_METRICS_TOKEN": "0123456789abcdef-token",
        "LAKECACHE_MAX_OUTPUT_BYTES": "1234567",
    }
    table = settings_table().rows()
    names = [e.strip("`") for _, e, _, _ in table if e != "—"]
    for name in names:
        env[name] = values.get(name, f"value-of-{name}")
    settings, config = load_config(None, env)
    read = {
        "LAKECACHE_HOME": str(settings.home),
        "LAKECACHE_ADMIN_PASSWORD": config.admin_password,
        "LAKECACHE_METRICS_TOKEN": config.metrics_token,
    }
    env_of = dict(settings_module._ENV)
    for name in names:
        got = read.get(name) if name in read else getattr(settings, env_of[name])
        assert str(got) == env[name], f"{name} is documented but not read"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, timedelta):
        return f'"{int(value.total_seconds())}s"'
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def test_every_server_key_in_the_table_is_taken_by_the_config_file(tmp_path: Path) -> None:
    keys = settings_table().server_keys()
    defaults = ServerConfig()
    lines = ["[server]"]
    for key in keys:
        value = 168 if key == "session_hours" else getattr(defaults, key)
        lines.append(f"{key} = {_toml(value)}")
    path = tmp_path / "server.toml"
    path.write_text("\n".join(lines) + "\n")
    _, config = load_config(path, {"LAKECACHE_HOME": str(tmp_path)})
    assert config.session_ttl == timedelta(hours=168)
    for key in keys:
        if key != "session_hours":
            assert getattr(config, key) == getattr(defaults, key), key
