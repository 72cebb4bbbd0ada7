"""The limits, name patterns and problem-collecting checks every spec value object shares.

Linode's documented limits (API v4 reference) are enforced here before anything is sent.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Final, Literal

__all__ = [
    "SPEC_VERSION",
    "is_gpu_type",
]

SPEC_VERSION: Final = 1

# Documented Linode limits (API v4 reference) the spec enforces before anything is sent.
POOL_NODES_MIN: Final = 1
POOL_NODES_MAX: Final = 100
MAX_FIREWALL_RULES: Final = 25
MAX_FIREWALL_PORT_PIECES: Final = 15
SUBNET_PREFIX_MIN: Final = 1
SUBNET_PREFIX_MAX: Final = 29
METRICS_RETENTION_MIN_DAYS: Final = 30
SECRET_ROTATION_MAX_DAYS: Final = 365
#: The secrets every environment's bundle must hold (the default bundle is exactly these).
REQUIRED_SECRETS: Final = ("api-token", "metrics-credentials")

_CLUSTER_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,30}[A-Za-z0-9])?")
_POOL_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_FIREWALL_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,30}[A-Za-z0-9]")
_VPC_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")
_BUCKET_LABEL = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEY_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,49}")
_DB_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,30}[A-Za-z0-9]")
_PLATFORM_NAME = re.compile(r"[a-z][a-z0-9-]{1,22}[a-z0-9]")
_ENV_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_REGION = re.compile(r"[a-z]{2}-[a-z]+(?:-\d+)?")
_K8S_VERSION = re.compile(r"\d+\.\d+")
_TYPE_ID = re.compile(r"[a-z0-9][a-z0-9-]*(?:\.\d+)?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")
_CPU = re.compile(r"\d+(?:\.\d+)?m?")
_MEMORY = re.compile(r"\d+(?:Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?")
_PORTS_PIECE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_ENGINE = re.compile(r"postgresql/\d+(?:\.\d+)?")
_OBJECT_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_IMAGE_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[^\s]*)?")
_GIT_URL = re.compile(r"(?:https://[^\s]+|ssh://[^\s]+|git@[A-Za-z0-9.-]+:[^\s]+)")
_GIT_PATH = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
_REVISION = re.compile(r"[A-Za-z0-9_./-]{1,128}")
_RECEIVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

_RFC1918 = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)

Effect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
Action = Literal["ACCEPT", "DROP"]
Protocol = Literal["TCP", "UDP", "ICMP", "IPENCAP"]
Permission = Literal["read_only", "read_write"]
Direction = Literal["ingress", "egress"]
PortProtocol = Literal["TCP", "UDP", "SCTP"]
SyncMode = Literal["auto", "manual"]
Severity = Literal["critical", "warning", "info"]

# --------------------------------------------------------------------------------------------
# Problems collected by each class's checks: (relative path, message)

Problems = list[tuple[str, str]]


class _InvalidError(ValueError):
    """Raised by a value object's ``__attrs_post_init__`` with every problem it found."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))


def _raise_if(problems: Problems) -> None:
    if problems:
        raise _InvalidError(problems)


def _label(problems: Problems, field: str, value: str, pattern: re.Pattern[str], rule: str) -> None:
    if not pattern.fullmatch(value):
        problems.append((field, f"{rule}, got {value!r}"))


def _count(problems: Problems, field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        problems.append((field, f"must be between {low} and {high}, got {value}"))


def _cidr(value: str, *, v6: bool = False) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    if (net.version == 6) != v6:
        return None
    return net


def _check_k8s_labels(problems: Problems, field: str, labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        bad_prefix = bool(prefix) and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))
        if bad_prefix or not _LABEL_NAME.fullmatch(name):
            problems.append((f"{field}.{key}", "is not a valid Kubernetes label key"))
        if not _LABEL_VALUE.fullmatch(value):
            problems.append(
                (f"{field}.{key}", f"is not a valid Kubernetes label value, got {value!r}")
            )


def is_gpu_type(type_id: str) -> bool:
    """Whether a Linode plan id is a GPU plan (every Linode GPU plan id contains ``gpu``)."""
    return "gpu" in type_id
