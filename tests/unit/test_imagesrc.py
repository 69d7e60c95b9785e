"""hosts.yaml `images:` source keys (build / pull / present): defaults and every message, exactly."""
from __future__ import annotations

import pytest

from tests.support import DUAL, ENV, load_here as load, problems


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_default_is_present_everywhere():
    inv = load(DUAL)
    src = inv.sources
    assert [src.source_of(k) for k in ("redis", "queue_manager", "admin", "frontend", "worker")] == ["present"] * 5
    assert src.repository is None and src.keep == 3 and src.registry is None and src.copy_from is None
    assert (inv.timeouts.build, inv.timeouts.pull, inv.timeouts.command) == (1800, 600, 120)


def test_build_source_defaults_branches_and_contexts():
    inv = load(DUAL + "images:\n  source: build\n  repository: git@github.com:team/comfyume.git\n")
    src = inv.sources
    mello, verda = inv.host("mello"), inv.host("verda")
    assert src.branch_for(mello) == "mello-track" and src.branch_for(verda) == "verda-track"
    assert src.source_of("worker") == "build" and src.source_of("redis") == "pull"
    assert [src.build_spec(k).context for k in ("queue_manager", "admin", "frontend", "worker")] == \
        ["queue-manager", "admin", "comfyui-frontend", "comfyui-worker"]
    assert src.build_spec("worker").dockerfile == "Dockerfile" and src.checkout == "comfyume-src"


def test_overrides_per_host_and_service():
    inv = load(DUAL + """images:
  source: build
  repository: ssh://git@100.64.0.9:22/srv/git/comfyume.git
  checkout: src/comfyume
  branch: {verda: feature/fast-vae, app: main}
  sources: {worker: pull, redis: present}
  build: {frontend: {context: ui, dockerfile: docker/Dockerfile.ui}}
  keep: 5
  copy_from: mello
""")
    src = inv.sources
    assert src.branch_for(inv.host("verda")) == "feature/fast-vae" and src.branch_for(inv.host("mello")) == "main"
    assert (src.source_of("worker"), src.source_of("redis"), src.source_of("admin")) == ("pull", "present", "build")
    assert src.build_spec("frontend") == type(src.build_spec("frontend"))("ui", "docker/Dockerfile.ui")
    assert (src.keep, src.copy_from, src.checkout) == (5, "mello", "src/comfyume")


def test_registry_password_is_a_secret_reference():
    text = DUAL + "images:\n  source: pull\n  registry: {server: '100.64.0.9:5000', user: team, password: REG_PW}\n"
    inv = load(text, dict(ENV, REG_PW="s3cret-registry"))
    reg = inv.sources.registry
    assert (reg.server, reg.user, reg.password_name) == ("100.64.0.9:5000", "team", "REG_PW")
    assert reg.password.reveal() == "s3cret-registry" and "s3cret" not in repr(inv)
    assert problems(text) == ["hosts.yaml:12 images.registry.password: REG_PW is not set "
                              "(export REG_PW=... or name an env file that has it in secrets.env_file)"]


BAD = {
    "unknown source": ("images: {source: git}\n",
                       ["hosts.yaml:10 images.source: unknown image source 'git' (expected one of: present, build, pull)"]),
    "build without repository": (
        "images: {source: build}\n",
        ["hosts.yaml:10 images.repository: images queue_manager, admin, frontend, worker are built, but no "
         "repository is given (add images.repository: the team's git URL, e.g. git@github.com:team/comfyume.git)"]),
    "url with shell metacharacters": (
        "images: {source: build, repository: 'git@h:x.git; rm -rf ~'}\n",
        ["hosts.yaml:10 images.repository: 'git@h:x.git; rm -rf ~' is not a git URL this tool accepts (an SSH or "
         "HTTPS git URL without spaces, quotes or shell characters, e.g. git@github.com:team/comfyume.git or "
         "ssh://git@host/srv/git/comfyume.git)"]),
    "url with command substitution": (
        "images: {source: build, repository: 'https://h/$(id).git'}\n",
        ["hosts.yaml:10 images.repository: 'https://h/$(id).git' is not a git URL this tool accepts (an SSH or "
         "HTTPS git URL without spaces, quotes or shell characters, e.g. git@github.com:team/comfyume.git or "
         "ssh://git@host/srv/git/comfyume.git)"]),
    "branch with metacharacters": (
        "images: {source: build, repository: 'git@h:c.git', branch: {worker: 'x`id`'}}\n",
        ["hosts.yaml:10 images.branch.worker: branch 'x`id`' is not allowed (a git branch name: letters, digits "
         "and . _ / - only, not starting with '-' or '.', no '..')"]),
    "branch starting with dash": (
        "images: {source: build, repository: 'git@h:c.git', branch: {app: '--upload-pack=x'}}\n",
        ["hosts.yaml:10 images.branch.app: branch '--upload-pack=x' is not allowed (a git branch name: letters, "
         "digits and . _ / - only, not starting with '-' or '.', no '..')"]),
    "branch as a string": (
        "images: {branch: main}\n",
        ["hosts.yaml:10 images.branch: expected a mapping of role or host to branch, got a string 'main' "
         "(e.g. branch: {app: main, worker: main})"]),
    "branch for unknown host": (
        "images: {branch: {verdaa: x}}\n",
        ["hosts.yaml:10 images.branch.verdaa: 'verdaa' is neither a role nor a host (did you mean 'verda'?)"]),
    "redis is not built": (
        "images: {sources: {redis: build}}\n",
        ["hosts.yaml:10 images.sources.redis: redis is not built from the repository (write pull (from its "
         "registry) or present)"]),
    "context escapes the repository": (
        "images: {build: {worker: {context: ../../etc}}}\n",
        ["hosts.yaml:10 images.build.worker.context: '../../etc' is not a safe path (a folder inside the "
         "repository: letters, digits and . _ / - only, no '..', not absolute)"]),
    "unknown key": ("images: {reposit: x}\n",
                    ["hosts.yaml:10 images.reposit: unknown key 'reposit' (did you mean 'repository'?)"]),
    "copy from unknown host": ("images: {copy_from: mellow}\n",
                               ["hosts.yaml:10 images.copy_from: unknown host 'mellow' (did you mean 'mello'?)"]),
    "keep out of range": ("images: {keep: 0}\n",
                          ["hosts.yaml:10 images.keep: 0 is out of range (expected a number of deploys from 1 to 100)"]),
    "password written inline": (
        "images: {registry: {server: r.example.com, user: u, password: 'hunter2!'}}\n",
        ["hosts.yaml:10 images.registry.password: is not the name of a secret (the value is not shown) (give the name of an "
         "environment variable or env_file entry, e.g. REGISTRY_PASSWORD, never the password itself)"]),
    "timeouts.build": ("timeouts: {build: 0}\n",
                       ["hosts.yaml:10 timeouts.build: 0 is not greater than 0 (give a number of seconds greater than 0)"]),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_image_sources(name):
    text, expected = BAD[name]
    found = problems(DUAL + text)
    assert found == expected
    assert "hunter2" not in "\n".join(found)
