"""start-all's image step: images from their sources (images.source: present / build / pull),
checked before anything is touched and (under the deploy lock) got onto each host.

A helper module of start-all (like ops/health.py), entered through a few calls (the sections it
reads about images are `checks.images.state_parts`):

- `preflight(inv, states)`: every missing thing, raised before the lock (checks/images.py).
- `prepare(inv, session, plan, say)`: under the lock, fetch each building host's branch, resolve
  it to a commit, build only the images whose build context changed (tagged `name:<12-hex
  commit>` and the configured tag), pull the pulled ones, and return the plan whose .env files
  name exactly those tags (so `compose up` recreates only the services whose image changed).
"""
from __future__ import annotations

import dataclasses
import shlex
import time
from typing import Callable, Mapping

from ..checks.images import host_images, image_findings, raise_image_problems
from ..errors import UnhealthyError
from ..host import commands as cmd
from ..host.actions import git as gitact
from ..host.actions import images as imgact
from ..host.facts import git as gitfacts
from ..host.facts import images as imgfacts
from ..host.session import Session, gather
from .transfer import copy_image
from ..host.state import HostState
from ..inventory import model
from ..inventory.model import Host, Inventory
from ..plan.planner import Plan


def preflight(inv: Inventory, states: Mapping[str, HostState], settled: Mapping[str, bool] | None = None
              ) -> list[str]:
    """Raise every image problem at once (inventory-side: ConfigError, exit 2; a missing image: exit 7;
    other host-side ones: exit 4); else return the warnings (a missing image where nothing is to be
    (re)created: `settled`, host -> True)."""
    problems, warnings = image_findings(inv, states, settled)
    raise_image_problems(problems)
    return warnings


# --- under the deploy lock: get each host's images at its branch's commit ------------------------

BUILD_TAIL_LINES = 12  # a failed build's last lines, quoted in the error


@dataclasses.dataclass
class HostImages:
    """What one host deploys: the image reference per .env variable, and where it came from."""
    name: str
    refs: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. WORKER_IMAGE -> name:<sha12>
    branch: str | None = None
    commit: str | None = None
    built: list[str] = dataclasses.field(default_factory=list)  # images.<key> built now
    retagged: list[str] = dataclasses.field(default_factory=list)  # same tree as an earlier build: tagged only
    pulled: list[str] = dataclasses.field(default_factory=list)
    history: list[dict] = dataclasses.field(default_factory=list)  # earlier deploys, newest first

    def record(self) -> dict:
        """For deployed.json: the commit, the branch and the image of each variable."""
        return {"branch": self.branch, "commit": self.commit, "images": dict(sorted(self.refs.items()))}


def prepare(inv: Inventory, s: Session, plan: Plan, say: Callable[[str], None],
            given: Mapping[str, Mapping[str, str]] | None = None,
            states: Mapping[str, HostState] | None = None) -> tuple[Plan, dict[str, HostImages]]:
    """Fetch, build (only what changed) or pull each host's images, in parallel across hosts, and
    return the plan with each host's .env naming exactly those images (`name:<commit>`).

    `given` (rollback): host -> {variable: reference} to deploy as they are, already on the hosts;
    nothing is fetched or built. A failed build raises at that host and service, leaving the
    previous images and the running containers as they were."""
    hosts = [hp.host for hp in plan.hosts]
    if given is None and inv.sources.copy_from and states:
        _copy_missing(inv, s, hosts, states, say)
    if given is not None:
        got = {h.name: HostImages(h.name, refs=dict(given[h.name]["refs"]), branch=given[h.name].get("branch"),
                                  commit=given[h.name].get("commit")) for h in hosts if h.name in given}
    else:
        if not any(inv.image_keys_from(h, "build") or inv.image_keys_from(h, "pull") for h in hosts):
            return plan, {}
        got = gather(lambda h: _prepare_host(inv, s[h.name], h, say), hosts,
                     hint="the previous images and the running containers were left as they were")
    for name, hi in got.items():
        hi.history = _history((states[name].deployed if states and name in states else None), inv.sources.keep)
    pruning = [h for h in hosts if h.name in got and got[h.name].built]
    if pruning:
        gather(lambda h: _prune(s[h.name], got[h.name]), pruning)
    return with_images(plan, got), dict(got)


def _prune(remote, hi: HostImages) -> None:
    """Untag the commit tags this tool built that are not among the last images.keep deploys
    (an image still used by a container, or still tagged otherwise, stays)."""
    keep = {r for h in [{"refs": hi.refs}] + hi.history for r in (h.get("refs") or {}).values()}
    listing = remote.run(shlex.join(["docker", "image", "ls", "--filter", f"label={imgfacts.SERVICE_LABEL}",
                                     "--format", "{{.Repository}}:{{.Tag}}"]), step="prune").stdout.split()
    old = [r for r in listing if r.rpartition(":")[2] != "<none>" and len(r.rpartition(":")[2]) == imgfacts.SHORT
           and all(c in "0123456789abcdef" for c in r.rpartition(":")[2]) and r not in keep]
    if old:
        remote.run(shlex.join(["docker", "rmi", *old]) + " >/dev/null 2>&1; true", step="prune")


def _copy_missing(inv: Inventory, s: Session, hosts: list[Host], states: Mapping[str, HostState], say) -> None:
    """images.copy_from: a `present` image a host lacks is copied from that host (a new GPU host
    gets its worker image without a registry or a rebuild)."""
    source = inv.sources.copy_from
    for host in hosts:
        if host.name == source or host.name not in states:
            continue
        have = host_images(states[host.name]) or {}
        for key in inv.image_keys(host):
            ref = getattr(inv.images, key)
            if inv.sources.source_of(key) == "present" and imgfacts.normalize(ref) not in have:
                copy_image(s, source, host.name, ref, inv.timeouts.pull, say)


def _history(previous: dict | None, keep: int) -> list[dict]:
    """The deploys before this one, newest first (at most keep - 1 of them, plus this one = keep)."""
    imgs = (previous or {}).get("images") or {}
    if not imgs.get("refs"):
        return []
    last = {k: imgs.get(k) for k in ("refs", "branch", "commit")}
    last["at"] = (previous or {}).get("at")
    return [last] + [h for h in imgs.get("history", []) if h.get("refs") != last["refs"]][: max(0, keep - 2)]


def _prepare_host(inv: Inventory, remote, host: Host, say: Callable[[str], None]) -> HostImages:
    out = HostImages(host.name)
    keys = inv.image_keys_from(host, "build")
    if keys:
        _build_host(inv, remote, host, keys, out, say)
    pulls = inv.image_keys_from(host, "pull")
    have = imgfacts.parse_image_list(remote.run(imgfacts.LIST_COMMAND, step="images").stdout) if pulls else {}
    auth_dir = None  # this run's registry login (imgact.auth_dir_command): removed after the pulls
    try:
        for key in pulls:
            ref = getattr(inv.images, key)
            if imgfacts.normalize(ref) in have:
                continue  # pulled before: a tag is taken as immutable (give a new tag to deploy a new image)
            reg = inv.sources.registry
            served = reg is not None and reg.serves(ref)
            if served and auth_dir is None:
                auth_dir = _login(inv, remote, host, reg, say)
            say(f"{host.name}/{key}: docker pull {ref}")
            res = remote.run(imgact.pull_command(ref, auth_dir if served else None), timeout=inv.timeouts.pull,
                             step=f"pull {key}")
            if not res.ok:
                raise UnhealthyError(f"docker pull {ref} failed: {res.tail()}", host=host.name, step=f"pull {key}",
                                     hint="check the reference and images.registry; the running containers were "
                                          "left as they were")
            out.pulled.append(key)
    finally:
        if auth_dir is not None:
            _logout(remote, host, auth_dir, say)
    return out


def _logout(remote, host: Host, auth_dir: str, say) -> None:
    """Remove this run's login folder. Never masks the error that ended the pulls: a folder left
    behind (the host stopped answering) is removed by the next login on that host."""
    try:
        res = remote.run(imgact.remove_auth_dir_command(auth_dir), step="registry logout")
        ok = res.ok
    except Exception:  # noqa: BLE001 - see above
        ok = False
    if not ok:
        say(f"{host.name}: could not remove the registry login folder {auth_dir}; the next pull removes it")


def _login(inv: Inventory, remote, host: Host, reg, say) -> str:
    """`docker login` into a private folder made for this run (DOCKER_CONFIG), so the password is
    never left in the host's ~/.docker/config.json; returns the folder (the caller removes it)."""
    made = remote.run(imgact.auth_dir_command(host.workdir), step="registry login")
    auth_dir = imgact.parse_auth_dir(made.stdout, host.workdir) if made.ok else None
    if auth_dir is None:
        raise UnhealthyError(f"could not make a private folder for the registry login in {host.workdir}: "
                             f"{made.tail(200) or f'exit {made.exited}'}", host=host.name, step="registry login",
                             hint="check that the workdir is yours and the disk is not full")
    say(f"{host.name}: docker login {reg.server} as {reg.user} (password on stdin, kept for this run only)")
    try:
        res = remote.run(imgact.login_command(reg.server, reg.user, auth_dir), step="registry login",
                         input=(reg.password.reveal() + "\n").encode() if reg.password else b"\n",
                         timeout=inv.timeouts.pull)
    except BaseException:
        _logout(remote, host, auth_dir, say)
        raise
    if not res.ok:
        _logout(remote, host, auth_dir, say)
        raise UnhealthyError(f"docker login {reg.server} as {reg.user} failed: {res.tail(200)}",
                             host=host.name, step="registry login",
                             hint=f"check the secret {reg.password_name} and images.registry")
    return auth_dir


def _build_host(inv: Inventory, remote, host: Host, keys: list[str], out: HostImages, say) -> None:
    src = inv.sources
    checkout = cmd.workdir_path(src.checkout)
    branch = src.branch_for(host)
    contexts = [src.build_spec(k).context for k in keys]
    script = cmd.sections([
        ("commit", gitact.fetch_command(checkout, src.repository or "", branch)),
        ("trees", gitfacts.trees_command(checkout, f"refs/heads/{branch}", contexts)),
        ("images", imgfacts.LIST_COMMAND)], parallel=False)
    res = remote.run(script, timeout=inv.timeouts.pull, step="fetch")
    sec = cmd.split_sections(res.stdout)
    code, text = sec.get("commit", (1, res.stderr))
    if code != 0:
        what, hint = gitfacts.remote_problem(text, src.repository or "")
        raise UnhealthyError(f"fetching branch {branch}: {what}", host=host.name, step="fetch", hint=hint)
    commit = gitfacts.parse_sha(text)
    code, text = sec.get("trees", (1, ""))
    if code != 0:
        raise UnhealthyError(f"branch {branch} at {commit[:12]} lacks a build context of "
                             f"{', '.join(keys)}: {text.strip()[-200:]}", host=host.name, step="fetch",
                             hint="check images.build.<service>.context against the repository's folders")
    trees = gitfacts.parse_trees(text, contexts)
    have = imgfacts.parse_image_list(sec.get("images", (0, ""))[1])
    out.branch, out.commit = branch, commit
    deadline = time.monotonic() + inv.timeouts.build  # all of this host's builds
    for key in keys:
        ref = getattr(inv.images, key)
        tag = imgfacts.commit_ref(ref, commit)
        out.refs[model.IMAGE_SERVICES[key][1]] = tag
        if tag in have:
            continue  # built (or tagged) at this commit before: nothing to do
        spec = src.build_spec(key)
        tree = trees[spec.context]
        found = remote.run(imgfacts.find_tree_command(key, tree), step=f"build {key}").stdout.split()
        if found:
            say(f"{host.name}/{key}: {spec.context} unchanged since an earlier build; tagging {tag}")
            res = remote.run(f"docker tag {cmd.q(found[0])} {cmd.q(tag)} && docker tag {cmd.q(found[0])} {cmd.q(ref)}",
                             step=f"build {key}")
            if res.ok:
                out.retagged.append(key)
                continue
        _build_one(inv, remote, host, key, ref, tag, spec, commit, branch, tree, checkout, say, deadline)
        out.built.append(key)


def _build_one(inv, remote, host, key, ref, tag, spec, commit, branch, tree, checkout, say,
               deadline: float) -> None:
    labels = {imgfacts.COMMIT_LABEL: commit, imgfacts.BRANCH_LABEL: branch, imgfacts.TREE_LABEL: tree,
              imgfacts.SERVICE_LABEL: key}
    command = imgact.build_command(checkout, commit, spec.context, spec.dockerfile, [tag, ref], labels)
    say(f"{host.name}/{key}: building {tag} from {branch} at {commit[:12]} ({spec.context}/{spec.dockerfile})")
    lines: list[str] = []
    t0 = time.monotonic()

    def show(line: str) -> None:
        lines.append(line)
        if line.strip():
            say(f"{host.name}/{key}: {line.rstrip()}")

    # The host itself stops a build that runs past the budget (coreutils `timeout`): a build left
    # running after we gave up would still tag `ref` minutes later, behind everyone's back.
    budget = max(1.0, deadline - time.monotonic())
    res = remote.run(f"timeout -k 10 {budget:.1f} bash -c {cmd.q(command + ' 2>&1')}", timeout=budget + 30,
                     step=f"build {key}", on_line=show)
    if res.exited in (124, 137):
        raise UnhealthyError(f"building {tag} from {branch} at {commit[:12]} did not finish within "
                             f"{inv.timeouts.build:g} s (timeouts.build, for all of this host's builds); the "
                             "build was stopped on the host", host=host.name, step=f"build {key}",
                             hint="the previous images and the running containers were left as they were; raise "
                                  "timeouts.build (a first build of a big image can take long) and rerun start-all")
    if not res.ok:
        tail = [ln.strip() for ln in (lines or res.stdout.splitlines()) if ln.strip()][-BUILD_TAIL_LINES:]
        raise UnhealthyError(f"building {tag} from {branch} at {commit[:12]} failed: " + " | ".join(tail),
                             host=host.name, step=f"build {key}",
                             hint="the previous images and the running containers were left as they were; "
                                  f"fix {spec.context}/{spec.dockerfile} on {branch} and rerun start-all")
    say(f"{host.name}/{key}: built {tag} in {time.monotonic() - t0:.1f} s")


def with_images(plan: Plan, got: Mapping[str, HostImages]) -> Plan:
    """The plan with each host's .env naming the images in `got` (its env hash recomputed)."""
    hosts = []
    for hp in plan.hosts:
        refs = {k: v for k, v in (got.get(hp.name).refs if hp.name in got else {}).items() if k in hp.env}
        if refs:
            hp = hp.with_env(refs)
        hosts.append(hp)
    by_name = {hp.name: hp for hp in hosts}
    return dataclasses.replace(plan, hosts=tuple(hosts), app=by_name[plan.app.name],
                               workers=tuple(by_name[w.name] for w in plan.workers))


def deployed_images(hp, got: HostImages | None) -> dict:
    """deployed.json's `images`: every *_IMAGE variable of the host's .env, and the branch/commit
    it was built from (when built here)."""
    refs = {k: str(v) for k, v in sorted(hp.env.items()) if k.endswith("_IMAGE")}
    out: dict = {"refs": refs}
    if got is not None and got.commit:
        out.update(branch=got.branch, commit=got.commit, built=list(got.built))
    if got is not None:
        out["history"] = [h for h in got.history if h.get("refs") != refs]
    return out


def audit_detail(imgs: dict) -> str:
    """The audit line's image fields: commit=<sha12> branch=<name> when built from the repository."""
    if imgs.get("commit"):
        return f"commit={imgs['commit'][:12]} branch={imgs['branch']}"
    return ""


