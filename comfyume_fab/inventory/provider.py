"""A worker host's `provider:` section (what to rent, where, from which image, with which kept
volumes; secrets by NAME only) and its `autostop:` section (idle time and maximum lifetime)."""
from __future__ import annotations

import re
from typing import Any

from . import model
from .checker import URL_RE, Checker, in_range, kind_of, one_of, pattern, shown

PROVIDER_KEYS = ("name", "api", "instance_type", "location", "spot", "image", "os_volume", "volumes",
                 "hostname_prefix", "ssh_keys", "tailscale_authkey", "provision_timeout")
AUTOSTOP_KEYS = ("idle", "max_lifetime")
TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOCATION_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VOLUME_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
SSH_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@:-]{0,127}$")
SECRET_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MIN_IDLE_S = 60  # the shortest idle accepted (autostop reads the queue every quarter of idle, every 5-60 s)
MIN_PROVISION_S = 10


def read_provider(c: Checker, host_path: tuple, raw: Any) -> model.ProviderSpec | None:
    """`hosts.<name>.provider`, or None after a problem (recorded)."""
    path = host_path + ("provider",)
    example = "provider: {name: verda, instance_type: 1H100.80S.30V, location: FIN-01}"
    if not isinstance(raw, dict):
        c.err(path, f"expected a mapping, got {kind_of(raw)}{shown(raw)}",
              f"e.g. {example}; see docs/provider.md")
        return None
    spec = c.mapping(path, raw, PROVIDER_KEYS, example)
    before = len(c.found)
    d = model.ProviderSpec(instance_type="")
    name = c.get(spec, path, "name", "str", d.name, check=one_of(model.CLOUD_PROVIDERS, "provider"))
    api = c.get(spec, path, "api", "str", d.api, check=pattern(URL_RE, "is not an http(s) URL",
                                                              f"the provider's API, e.g. {model.DEFAULT_CLOUD_API}"))
    itype = c.get(spec, path, "instance_type", "str", None, example="1H100.80S.30V",
                  required="the instance type to rent, e.g. instance_type: 1H100.80S.30V",
                  check=pattern(TYPE_RE, "is not an instance type", "letters, digits, '.', '_' and '-', "
                                "e.g. 1H100.80S.30V"))
    location = c.get(spec, path, "location", "str", d.location,
                     check=pattern(LOCATION_RE, "is not a location code", "capital letters, digits and '-', "
                                   "e.g. FIN-01"))
    spot = c.get(spec, path, "spot", "bool", d.spot)
    image = c.get(spec, path, "image", "str", None, example=model.DEFAULT_CLOUD_IMAGE,
                  check=pattern(IMAGE_RE, "is not an OS image name", f"e.g. {model.DEFAULT_CLOUD_IMAGE}"))
    os_volume = c.get(spec, path, "os_volume", "str", None, example="46fc0247-8f65-4d8a-ad73-852a8b3dc1d3",
                      check=pattern(VOLUME_ID_RE, "is not a volume id", "the id `GET /volumes` shows"))
    if "image" in spec and "os_volume" in spec:
        c.err(path + ("os_volume",), "give either image or os_volume, not both",
              "os_volume boots a kept OS volume; image installs a fresh one")
    volumes = _list(c, spec, path, "volumes", VOLUME_ID_RE, "a volume id",
                    "the data volume's id (`GET /volumes`); it is attached and never deleted by this tool")
    prefix = c.get(spec, path, "hostname_prefix", "str", d.hostname_prefix,
                   check=pattern(PREFIX_RE, "is not a hostname prefix",
                                 "lowercase letters, digits and '-', at most 40 characters"))
    ssh_keys = _list(c, spec, path, "ssh_keys", SSH_KEY_RE, "an SSH key name or id",
                     "a key's name or id in Verda's SSH keys; default: the host's identity_file .pub is registered")
    authkey = c.get(spec, path, "tailscale_authkey", "str", d.tailscale_authkey,
                    check=pattern(SECRET_NAME_RE, "is not a secret name",
                                  "the NAME of the secret holding the auth key (environment variable or "
                                  "secrets.env_file entry), e.g. TAILSCALE_AUTHKEY; never the key itself"))
    timeout = c.get(spec, path, "provision_timeout", "number", d.provision_timeout,
                    check=in_range(MIN_PROVISION_S, 7200, "a number of seconds"))
    if len(c.found) != before or itype is None:
        return None
    return model.ProviderSpec(instance_type=itype, name=name, api=api.rstrip("/"), location=location, spot=spot,
                              image=None if os_volume else (image or model.DEFAULT_CLOUD_IMAGE),
                              os_volume=os_volume, volumes=volumes, hostname_prefix=prefix, ssh_keys=ssh_keys,
                              tailscale_authkey=authkey, provision_timeout=float(timeout))


def _list(c: Checker, spec: dict, path: tuple, key: str, regex: re.Pattern, noun: str, hint: str) -> tuple[str, ...]:
    raw = c.get(spec, path, key, "list", [], example="[ID]")
    out: list[str] = []
    for index, item in enumerate(raw):
        where = path + (key, index)
        if not isinstance(item, str) or not regex.fullmatch(item):
            c.err(where, f"{shown(item).strip() or kind_of(item)} is not {noun}", hint)
        elif item in out:
            c.err(where, f"'{item}' is listed twice", f"list each {noun.split(' ', 1)[1]} once")
        else:
            out.append(item)
    return tuple(out)


def seconds_of(text: str) -> int | None:
    """'30m' -> 1800, '12h' -> 43200, '1h30m' -> 5400, '90s' -> 90; None when not a duration."""
    m = DURATION_RE.fullmatch(text.strip()) if text.strip() else None
    if not m:
        return None
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def _duration(c: Checker, spec: dict, path: tuple, key: str, minimum: int) -> int | None:
    value = spec.get(key)
    where = path + (key,)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        c.err(where, f"expected a duration, got {kind_of(value)}{shown(value)}", "e.g. 30m, 12h or 1h30m")
        return None
    secs = value if isinstance(value, int) else seconds_of(value)
    if secs is None:
        c.err(where, f"'{value}' is not a duration", "a number and a unit: s, m, h or d, e.g. 30m, 12h or 1h30m")
        return None
    if secs < minimum:
        c.err(where, f"{value} is shorter than {minimum // 60} minute(s)",
              f"give {minimum // 60}m or more: the app host's timer looks once a minute")
        return None
    return secs


def read_autostop(c: Checker, host_path: tuple, raw: Any) -> model.Autostop | None:
    """`hosts.<name>.autostop: {idle: 30m, max_lifetime: 12h}`, or None after a problem (recorded)."""
    path = host_path + ("autostop",)
    if not isinstance(raw, dict):
        c.err(path, f"expected a mapping, got {kind_of(raw)}{shown(raw)}", "e.g. autostop: {idle: 30m, max_lifetime: 12h}")
        return None
    spec = c.mapping(path, raw, AUTOSTOP_KEYS, "autostop: {idle: 30m, max_lifetime: 12h}")
    before = len(c.found)
    if "idle" not in spec:
        c.err(path + ("idle",), "required key is missing",
              "how long the queue must be idle before the instance is deleted, e.g. idle: 30m")
    idle = _duration(c, spec, path, "idle", MIN_IDLE_S)
    lifetime = _duration(c, spec, path, "max_lifetime", MIN_IDLE_S)
    if len(c.found) != before or idle is None:
        return None
    return model.Autostop(idle_s=idle, max_lifetime_s=lifetime)
