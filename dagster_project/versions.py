"""Code versions, computed in one place from what each asset declares: the hash of the engine version and the
versioned configuration of exactly the resources the asset (or, for a graph-backed asset, any of its ops) receives.
An asset that starts reading a new setting must declare its resource, and then goes stale when it changes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from dagster import AssetChecksDefinition, AssetsDefinition, ConfigurableResource

ENGINE_VERSION = "3"


def code_version(required: set[str], resources: Mapping[str, ConfigurableResource]) -> str:
    """Hash of the engine version and the versioned configuration of the ``required`` resources."""
    payload = {key: resources[key].versioned_config() for key in sorted(required)
               if hasattr(resources[key], "versioned_config")}
    text = json.dumps([ENGINE_VERSION, payload], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def with_code_versions(
    stages: list[AssetsDefinition | AssetChecksDefinition], resources: Mapping[str, ConfigurableResource]
) -> list[AssetsDefinition | AssetChecksDefinition]:
    """Every asset with its code version derived from the resources it declares (checks and observed files are left
    as they are: a file's data version is its content)."""
    return [
        stage if isinstance(stage, AssetChecksDefinition) or not stage.is_materializable else stage.map_asset_specs(
            lambda spec, stage=stage: spec.replace_attributes(
                code_version=code_version(set(stage.required_resource_keys), resources)
            )
        )
        for stage in stages
    ]
