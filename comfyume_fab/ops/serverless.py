"""Mode serverless in `status`: the active tier, its GPU and price, what the queue manager's own
/health says (and whether someone switched tiers by hand on the host), the endpoint proved from
the app host (checks/serverless.py), and the deployment's replicas and scaling (when the
deployment API is configured)."""
from __future__ import annotations

from typing import Any

from ..checks.deployments import DeploymentError, api_for, describe
from ..checks.result import CheckResult
from ..checks.serverless import probe_endpoint, qm_health
from ..host.ssh.remote import Remote
from ..errors import ConfigError
from ..inventory.model import KNOWN_TIERS, Inventory, Tier, suggest


def tier_of_gpu(active_gpu: str | None) -> str | None:
    """'B300-288GB-SPOT' -> 'b300-spot' (the tier the team's queue manager reports it for)."""
    return next((name for name, (gpu, _, _) in KNOWN_TIERS.items() if gpu == active_gpu), None)


def price_text(inv: Inventory, tier: Tier | None) -> str:
    if tier is None or tier.price is None:
        return "price unknown"
    return f"{tier.price:.2f} {inv.serverless.currency}/h"


def tier_block(inv: Inventory, tier: Tier | None) -> dict[str, Any]:
    sv = inv.serverless
    return {"active": sv.active or "default", "gpu": tier.gpu_label if tier else None,
            "active_gpu_expected": sv.expected_gpu, "price_per_hour": tier.price if tier else None,
            "currency": sv.currency, "endpoint": sv.active_url, "deployment": tier.deployment_name if tier else None}


def health_check(inv: Inventory, remote: Remote) -> tuple[CheckResult, dict | None]:
    """The queue manager's /health against the plan: inference_mode serverless, the active tier's
    active_gpu; a different tier is drift, named with what to run."""
    sv = inv.serverless
    body, error = qm_health(remote, inv.ports.queue_manager, inv.timeouts.redis + 5)
    name = "serverless-queue-manager"
    if body is None:
        return CheckResult(name, False, error or "no /health", host=remote.name), None
    mode, gpu = body.get("inference_mode"), body.get("active_gpu")
    if mode != "serverless":
        return CheckResult(name, False, f"the queue manager runs inference_mode {mode!r}, not 'serverless' as "
                           "hosts.yaml says: run start-all", host=remote.name, data={"diagnosis": "mode"}), body
    if gpu != sv.expected_gpu:
        seen = tier_of_gpu(gpu)
        back = f"invoke switch-gpu {sv.active}" if sv.active and sv.tier(sv.active) else "invoke start-all"
        keep = (f", or set serverless.active: {seen} in {inv.path} to keep it" if seen and sv.tier(seen) else "")
        return CheckResult(name, False, f"the queue manager reports active_gpu {gpu} (tier {seen or 'unknown'}) but "
                           f"{inv.path} makes {sv.active or 'default'} active ({sv.expected_gpu}): the tier was "
                           f"switched by hand on {remote.name}; run `{back}` to go back{keep}", host=remote.name,
                           data={"diagnosis": "drift", "reported": gpu, "expected": sv.expected_gpu}), body
    return CheckResult(name, True, f"/health: inference_mode serverless, active_gpu {gpu} as planned",
                       host=remote.name, data={"reported": gpu}), body


def status_checks(inv: Inventory, remote: Remote, probe: bool) -> tuple[dict, list[CheckResult]]:
    """The serverless block of `status --json` and its checks, all from the app host (the
    deployment API, when configured, from here: it is the provider's, not the app host's)."""
    sv = inv.serverless
    tier = sv.active_tier
    block = tier_block(inv, tier)
    checks: list[CheckResult] = []
    health, body = health_check(inv, remote)
    checks.append(health)
    block["active_gpu_reported"] = body.get("active_gpu") if body else None
    key = inv.secrets.get("SERVERLESS_API_KEY")
    url = sv.active_url
    if not url:
        checks.append(CheckResult("serverless-endpoint", False, f"tier {sv.active} has no endpoint the queue manager "
                                  "uses and no fallback is set: it answers 503 'Serverless client not initialized'",
                                  host=remote.name))
    elif probe:
        found = probe_endpoint(remote, sv.active or "default", url, key.reveal() if key else None,
                               inv.timeouts.probe, inv.probe.workflow_graph,
                               name=f"serverless-{sv.active or 'default'}")
        checks.extend(found)
        block["probe"] = found[1].data
        block["open_without_key"] = found[0].data.get("open")
    if tier is not None:
        block["scaling"] = deployment_block(inv, tier, checks)
    return block, checks


def deployment_block(inv: Inventory, tier: Tier, checks: list[CheckResult]) -> dict | None:
    api = api_for(inv)
    if api is None:
        return None
    try:
        scaling = api.scaling(tier.deployment_name)
        replicas = api.replicas(tier.deployment_name)
    except DeploymentError as exc:
        checks.append(CheckResult(f"deployment-{tier.name}", False, str(exc), warning=True))
        return None
    line, block = describe(tier.deployment_name, scaling, replicas)
    if (block["max_replicas"] or 0) <= 0:
        checks.append(CheckResult(f"deployment-{tier.name}", False, f"{line}: the deployment is scaled to zero "
                                  "(max_replica_count 0), so no replica can ever start and every job fails; raise "
                                  f"its maximum (e.g. `invoke warm {tier.name} --replicas 1 --until HH:MM` sets the "
                                  "minimum, the maximum follows) or in the provider's console",
                                  data={"diagnosis": "scaled-to-zero", **block}))
    else:
        checks.append(CheckResult(f"deployment-{tier.name}", True, line, data=block))
    return block


def check_tier(inv: Inventory, tier: str) -> None:
    if inv.mode != "serverless":
        raise ConfigError(f"{inv.path}: switch-gpu and warm act on serverless tiers, but mode is {inv.mode} "
                          "(set mode: serverless and serverless.endpoints)")
    names = [t.name for t in inv.serverless.tiers]
    if tier not in names:
        close = suggest(tier, names)
        raise ConfigError(f"{inv.path}: '{tier}' is not a tier in serverless.endpoints ("
                          + (f"did you mean '{close}'? " if close else "") + f"tiers: {', '.join(names) or 'none'})")
