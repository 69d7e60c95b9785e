"""Secret fingerprints: slow and salted (the host's random salt and the variable's name), remembered
on disk only under the secrets file's identity and the salt (never anything computed from the
value), and recomputed whenever that file is edited or the salt differs."""
from __future__ import annotations

import json
import os
import stat

import pytest

from comfyume_fab.inventory import fingerprint as fp
from comfyume_fab.inventory.secrets import Secret, load_env_file, resolve_secrets

SALT = "5a1f" * 8  # a host's salt (host/facts/salt.py)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(fp.NO_CACHE_ENV, raising=False)
    monkeypatch.setattr(fp, "_memo", {})
    calls = []
    real = fp.slow_fingerprint

    def counting(name, value, salt):
        calls.append(name)
        return real(name, value, salt)
    monkeypatch.setattr(fp, "slow_fingerprint", counting)
    return calls


def secrets_from(path, environ=None):
    res = resolve_secrets(("REDIS_PASSWORD", "ADMIN_PASSWORD"), (), environ or {}, load_env_file(str(path)),
                          str(path))
    assert not res.problems
    return res.secrets


def write(path, text):
    path.write_text(text)
    path.chmod(0o600)


def test_a_rerun_with_the_same_secrets_file_computes_nothing(tmp_path, cache, monkeypatch):
    env = tmp_path / "secrets.env"
    write(env, "REDIS_PASSWORD=s3cret-one\nADMIN_PASSWORD=adm1n\n")
    first = {n: fp.fingerprint(n, s, SALT) for n, s in secrets_from(env).items()}
    assert sorted(cache) == ["ADMIN_PASSWORD", "REDIS_PASSWORD"]
    assert first["REDIS_PASSWORD"] == fp.slow_fingerprint("REDIS_PASSWORD", "s3cret-one", SALT)
    cache.clear()
    monkeypatch.setattr(fp, "_memo", {})  # a new process
    again = {n: fp.fingerprint(n, s, SALT) for n, s in secrets_from(env).items()}
    assert again == first and cache == []


def test_the_cache_file_is_private_and_holds_no_value_or_cheap_hash_of_it(tmp_path, cache):
    env = tmp_path / "secrets.env"
    write(env, "REDIS_PASSWORD=s3cret-one\nADMIN_PASSWORD=adm1n\n")
    for n, s in secrets_from(env).items():
        fp.fingerprint(n, s, SALT)
    path = fp.cache_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert "s3cret-one" not in text and "adm1n" not in text
    values = set(json.loads(text)["entries"].values())
    assert values == {fp.slow_fingerprint("REDIS_PASSWORD", "s3cret-one", SALT),
                      fp.slow_fingerprint("ADMIN_PASSWORD", "adm1n", SALT)}
    import hashlib
    cheap = {hashlib.sha256(v.encode()).hexdigest() for v in ("s3cret-one", "adm1n")}
    assert not cheap & set(json.loads(text)["entries"])


def test_editing_the_secrets_file_recomputes_even_at_the_same_size(tmp_path, cache, monkeypatch):
    env = tmp_path / "secrets.env"
    write(env, "REDIS_PASSWORD=aaaaaaaa\nADMIN_PASSWORD=adm1n\n")
    before = fp.fingerprint("REDIS_PASSWORD", secrets_from(env)["REDIS_PASSWORD"], SALT)
    st = env.stat()
    write(env, "REDIS_PASSWORD=bbbbbbbb\nADMIN_PASSWORD=adm1n\n")
    os.utime(env, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: ctime still moves
    monkeypatch.setattr(fp, "_memo", {})
    after = fp.fingerprint("REDIS_PASSWORD", secrets_from(env)["REDIS_PASSWORD"], SALT)
    assert after != before and after == fp.slow_fingerprint("REDIS_PASSWORD", "bbbbbbbb", SALT)


def test_a_secret_from_the_environment_is_never_cached_on_disk(tmp_path, cache):
    env = tmp_path / "secrets.env"
    write(env, "REDIS_PASSWORD=from-file\nADMIN_PASSWORD=adm1n\n")
    got = secrets_from(env, environ={"REDIS_PASSWORD": "from-environment"})
    assert got["REDIS_PASSWORD"].origin is None and got["ADMIN_PASSWORD"].origin
    assert fp.fingerprint("REDIS_PASSWORD", got["REDIS_PASSWORD"], SALT) == fp.slow_fingerprint(
        "REDIS_PASSWORD", "from-environment", SALT)
    assert not fp.cache_path().exists()


def test_a_cache_that_is_not_the_users_private_file_is_ignored(tmp_path, cache, monkeypatch):
    env = tmp_path / "secrets.env"
    write(env, "REDIS_PASSWORD=s3cret-one\nADMIN_PASSWORD=adm1n\n")
    s = secrets_from(env)["REDIS_PASSWORD"]
    fp.fingerprint("REDIS_PASSWORD", s, SALT)
    path = fp.cache_path()
    data = json.loads(path.read_text())
    data["entries"] = {k: "0" * 32 for k in data["entries"]}  # someone else's planted answers
    path.write_text(json.dumps(data))
    path.chmod(0o644)
    monkeypatch.setattr(fp, "_memo", {})
    assert fp.fingerprint("REDIS_PASSWORD", s, SALT) == fp.slow_fingerprint("REDIS_PASSWORD", "s3cret-one", SALT)
    path.write_text("not json")
    path.chmod(0o600)
    monkeypatch.setattr(fp, "_memo", {})
    assert fp.fingerprint("REDIS_PASSWORD", s, SALT) == fp.slow_fingerprint("REDIS_PASSWORD", "s3cret-one", SALT)


def test_no_cache_env_turns_the_disk_cache_off(tmp_path, cache, monkeypatch):
    monkeypatch.setenv(fp.NO_CACHE_ENV, "1")
    env = tmp_path / "secrets.env"
    write(env, "REDIS_PASSWORD=s3cret-one\nADMIN_PASSWORD=adm1n\n")
    fp.fingerprint("REDIS_PASSWORD", secrets_from(env)["REDIS_PASSWORD"], SALT)
    assert not fp.cache_path().exists()


def test_the_salt_is_the_variable_name():
    assert fp.slow_fingerprint("A", "same", SALT) != fp.slow_fingerprint("B", "same", SALT)
    assert Secret("x", "origin").origin == "origin" and repr(Secret("x", "o")) == "***"


def test_another_salt_is_another_cache_entry(tmp_path, cache, monkeypatch):
    """The same secrets file deployed to two hosts (two salts): each host's fingerprint is computed
    once and remembered under its own salt; neither answers for the other."""
    env = tmp_path / "secrets.env"
    write(env, "REDIS_PASSWORD=s3cret-one\nADMIN_PASSWORD=adm1n\n")
    s = secrets_from(env)["REDIS_PASSWORD"]
    other = "0123456789abcdef" * 2
    one, two = fp.fingerprint("REDIS_PASSWORD", s, SALT), fp.fingerprint("REDIS_PASSWORD", s, other)
    assert one != two and cache == ["REDIS_PASSWORD", "REDIS_PASSWORD"]
    assert two == fp.slow_fingerprint("REDIS_PASSWORD", "s3cret-one", other)
    cache.clear()
    monkeypatch.setattr(fp, "_memo", {})  # a new process
    assert (fp.fingerprint("REDIS_PASSWORD", s, SALT), fp.fingerprint("REDIS_PASSWORD", s, other)) == (one, two)
    assert cache == []
    assert len(json.loads(fp.cache_path().read_text())["entries"]) == 2
