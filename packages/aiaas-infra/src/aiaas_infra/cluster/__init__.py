"""The cluster side: the GitOps tree rendered from a spec, validation, network-policy evaluation
and applying objects to a cluster."""

from __future__ import annotations

from aiaas_infra.cluster._apply import (
    BootstrapError,
    BootstrapReport,
    ObjectResult,
    ResourceType,
    apply_objects,
    bootstrap,
    resource_for,
)
from aiaas_infra.cluster._gitops import (
    RenderedSet,
    render_environment,
    render_platform,
)
from aiaas_infra.cluster._netpol import (
    PolicyDecision,
    Verdict,
    allowed,
)
from aiaas_infra.cluster._validate import (
    ManifestProblem,
    ManifestValidator,
    packaged_crds_dir,
    validate_objects,
)

__all__ = [
    "BootstrapError",
    "BootstrapReport",
    "ManifestProblem",
    "ManifestValidator",
    "ObjectResult",
    "PolicyDecision",
    "RenderedSet",
    "ResourceType",
    "Verdict",
    "allowed",
    "apply_objects",
    "bootstrap",
    "packaged_crds_dir",
    "render_environment",
    "render_platform",
    "resource_for",
    "validate_objects",
]
