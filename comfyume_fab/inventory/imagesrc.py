"""The `images:` section: the reference of each service's image and where it comes from.

Beside the five references (`redis`, `queue_manager`, `admin`, `frontend`, `worker`) the section
takes the keys of the image source (docs/inventory.md, "Image sources"):

    source: present | build | pull     # every comfyume service; default present
    sources: {worker: pull}            # per-service override
    repository: ssh://git@host/comfyume.git   # build: the team's git repository
    checkout: comfyume-src             # build: the clone on each host (relative to the login home)
    branch: {app: mello-track, worker: verda-track, verda-2: my-branch}   # per role or host
    build: {worker: {context: comfyui-worker, dockerfile: Dockerfile}}
    registry: {server: registry.example.com:5000, user: team, password: REGISTRY_PASSWORD}
    keep: 3                            # deploys whose built images each host keeps (rollback)
    copy_from: mello                   # a host to copy a missing image from before building

A URL, branch or path reaches a shell on the host, so each is matched against a strict pattern
here (no quote, space, `;`, `$`, backtick, ...) as well as being quoted there.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from . import model
from .checker import IMAGE_RE, USER_RE, Checker, expand, in_range, one_of, pattern
from .secrets import EnvFileProblem, load_env_file, resolve_secrets

REF_KEYS = tuple(model.Images.__dataclass_fields__)
SOURCE_KEYS = ("source", "sources", "repository", "checkout", "branch", "build", "registry", "keep",
               "copy_from")
IMAGE_HINT = "letters, digits and . _ / : @ - only, e.g. comfyume-worker:v0.11.0"
# ssh://user@host[:port]/path, https://host/path, or scp-like user@host:path; no shell metacharacters
REPO_RE = re.compile(r"^(?:(?:ssh|https)://[A-Za-z0-9._~%+-]+(?:@[A-Za-z0-9._-]+)?(?::[0-9]+)?/[A-Za-z0-9._~/+-]+"
                     r"|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:[A-Za-z0-9._~/+-]+)$")
REPO_HINT = ("an SSH or HTTPS git URL without spaces, quotes or shell characters, e.g. "
             "git@github.com:team/comfyume.git or ssh://git@host/srv/git/comfyume.git")
BRANCH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$")
BRANCH_HINT = "a git branch name: letters, digits and . _ / - only, not starting with '-' or '.', no '..'"
RELPATH_RE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._/-]*$")
RELPATH_HINT = "a folder inside the repository: letters, digits and . _ / - only, no '..', not absolute"
SERVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]{1,5})?$")
SECRET_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def branch_check(value: str) -> tuple[str, str] | None:
    if (not BRANCH_RE.match(value) or ".." in value or value.endswith((".lock", "/", "."))
            or "//" in value):
        return f"branch '{value}' is not allowed", BRANCH_HINT
    return None


def relpath_check(value: str) -> tuple[str, str] | None:
    if not RELPATH_RE.match(value) or ".." in value.split("/"):
        return f"'{value}' is not a safe path", RELPATH_HINT
    return None


def checkout_check(value: str) -> tuple[str, str] | None:
    if not re.match(r"^[A-Za-z0-9._/~-]+$", value) or ".." in value.split("/") or value.startswith("-"):
        return (f"'{value}' is not a safe folder name",
                "letters, digits and . _ / ~ - only, no '..'; a relative path starts at the login user's home")
    return None


def secret_name_check(value: str) -> tuple[str, str] | None:
    if not SECRET_NAME_RE.match(value):  # never echoed: it may be the password written inline
        return ("is not the name of a secret (the value is not shown)",
                "give the name of an environment variable or env_file entry, e.g. REGISTRY_PASSWORD, "
                "never the password itself")
    return None


def read_images(c: Checker, top: dict, base: str, environ: Mapping[str, str],
                env_file_given: str | None) -> tuple[model.Images, model.ImageSources]:
    """The image references and their source; problems recorded on `c`."""
    where = ("images",)
    sec = c.mapping(where, top.get("images"), REF_KEYS + SOURCE_KEYS, "worker: comfyume-worker:v0.11.0")
    d = model.Images()
    refs = model.Images(**{k: c.get(sec, where, k, "str", getattr(d, k),
                                    check=pattern(IMAGE_RE, "is not an image reference", IMAGE_HINT))
                           for k in REF_KEYS})
    dflt = model.ImageSources()
    source = c.get(sec, where, "source", "str", dflt.source, check=one_of(model.IMAGE_SOURCES, "image source"))
    per_service = _per_service(c, sec)
    repository = c.get(sec, where, "repository", "str", None, example="git@github.com:team/comfyume.git",
                       check=pattern(REPO_RE, "is not a git URL this tool accepts", REPO_HINT))
    checkout = c.get(sec, where, "checkout", "str", dflt.checkout, check=checkout_check)
    branches = _branches(c, sec)
    build = _build(c, sec)
    keep = c.get(sec, where, "keep", "int", dflt.keep, check=in_range(1, 100, "a number of deploys"))
    copy_from = c.get(sec, where, "copy_from", "str", None, example="mello")
    registry = _registry(c, sec, base, environ, env_file_given)
    sources = model.ImageSources(source=source, per_service=per_service, repository=repository,
                                 checkout=checkout, branches=branches, build=build, registry=registry,
                                 keep=keep, copy_from=copy_from)
    builds = [k for k in model.IMAGE_SERVICES if sources.source_of(k) == "build"]
    if builds and repository is None and sec.get("repository") is None:
        c.err(where + ("repository",), f"images {', '.join(builds)} are built, but no repository is given",
              "add images.repository: the team's git URL, e.g. git@github.com:team/comfyume.git")
    return refs, sources


def check_hosts(c: Checker, sources: model.ImageSources, hosts: list[model.Host]) -> None:
    """Cross-checks against the hosts: copy_from and per-host branch keys name real hosts."""
    names = [h.name for h in hosts]
    if sources.copy_from is not None and sources.copy_from not in names:
        close = model.suggest(sources.copy_from, names)
        c.err(("images", "copy_from"), f"unknown host '{sources.copy_from}'",
              f"did you mean '{close}'?" if close else f"expected one of: {', '.join(names)}")
    for key in sources.branches:
        if key not in model.ROLES and key not in names:
            close = model.suggest(key, list(model.ROLES) + names)
            c.err(("images", "branch", key), f"'{key}' is neither a role nor a host",
                  f"did you mean '{close}'?" if close else
                  f"use app, worker or a host name: {', '.join(names)}")


def _per_service(c: Checker, sec: dict) -> dict[str, str]:
    where = ("images", "sources")
    raw = c.mapping(where, sec.get("sources"), REF_KEYS, "worker: pull")
    out = {}
    for key in raw:
        if key not in REF_KEYS:
            continue
        value = c.get(raw, where, key, "str", None, example="pull",
                      check=one_of(model.IMAGE_SOURCES, "image source"))
        if value == "build" and model.IMAGE_SERVICES[key][2] is None:
            c.err(where + (key,), f"{key} is not built from the repository",
                  "write pull (from its registry) or present")
        elif value is not None:
            out[key] = value
    return out


def _branches(c: Checker, sec: dict) -> dict[str, str]:
    where = ("images", "branch")
    raw = sec.get("branch")
    out = dict(model.DEFAULT_BRANCHES)
    if raw is None:
        return out
    if isinstance(raw, str):
        c.err(where, f"expected a mapping of role or host to branch, got a string '{raw}'",
              f"e.g. branch: {{app: {raw}, worker: {raw}}}")
        return out
    if not isinstance(raw, dict):
        c.err(where, f"expected a mapping of role or host to branch, got {type(raw).__name__}",
              "e.g. branch: {app: mello-track, worker: verda-track}")
        return out
    for key in raw:
        value = c.get(raw, where, str(key), "str", None, example="verda-track", check=branch_check)
        if value is not None:
            out[str(key)] = value
    return out


def _build(c: Checker, sec: dict) -> dict[str, model.BuildSpec]:
    where = ("images", "build")
    raw = c.mapping(where, sec.get("build"), tuple(k for k, v in model.IMAGE_SERVICES.items() if v[2]),
                    "worker: {context: comfyui-worker}")
    out = {}
    for key, spec in raw.items():
        if key not in model.IMAGE_SERVICES or model.IMAGE_SERVICES[key][2] is None:
            continue
        path = where + (key,)
        spec = c.mapping(path, spec, ("context", "dockerfile"), "context: comfyui-worker")
        context = c.get(spec, path, "context", "str", model.IMAGE_SERVICES[key][2], check=relpath_check)
        dockerfile = c.get(spec, path, "dockerfile", "str", "Dockerfile", check=relpath_check)
        out[key] = model.BuildSpec(context, dockerfile)
    return out


def _registry(c: Checker, sec: dict, base: str, environ: Mapping[str, str],
              env_file_given: str | None) -> model.Registry | None:
    where = ("images", "registry")
    raw: Any = c.mapping(where, sec.get("registry"), ("server", "user", "password"),
                         "server: registry.example.com:5000")
    if not raw:
        return None
    server = c.get(raw, where, "server", "str", None, required="the registry's host[:port]",
                   check=pattern(SERVER_RE, "is not a registry host[:port]", "e.g. registry.example.com:5000"))
    user = c.get(raw, where, "user", "str", None, required="the registry login name",
                 check=pattern(USER_RE, "is not a valid login name",
                               "letters, digits, '.', '_' and '-', not starting with '-'"))
    name = c.get(raw, where, "password", "str", None,
                 required="the NAME of the secret holding the password (never the password itself)",
                 check=secret_name_check)
    if None in (server, user, name):
        return None
    env_file = None
    if env_file_given:
        try:
            env_file = load_env_file(expand(env_file_given, base))
        except EnvFileProblem:
            env_file = None  # reported by the secrets section
    res = resolve_secrets((name,), (), environ, env_file, env_file_given)
    for what, hint in res.problems:
        c.err(where + ("password",), what, hint)
    return model.Registry(server=server, user=user, password_name=name, password=res.secrets.get(name))
