"""dbt staging models as assets; dbt tests become asset checks."""


import os
import shutil
import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from ops_platform.paths import StatePaths
from resources.warehouse import WarehouseResource

DBT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
DBT_PROJECT = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)
# The dbt beside this interpreter first, so an un-activated virtualenv still works.
_VENV_DBT = Path(sys.executable).parent / "dbt"
DBT_EXECUTABLE = str(_VENV_DBT) if _VENV_DBT.exists() else (shutil.which("dbt") or "dbt")


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=DBT_PROJECT, profiles_dir=str(DBT_DIR), dbt_executable=DBT_EXECUTABLE)


def ensure_manifest() -> Path:
    """Parse the dbt project when its manifest is missing or older than any project file."""
    manifest = DBT_PROJECT.manifest_path
    sources = [p for p in DBT_DIR.rglob("*") if p.suffix in (".sql", ".yml") and "target" not in p.parts]
    newest = max((p.stat().st_mtime for p in sources), default=0)
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        os.environ.setdefault("OPS_PLATFORM_WAREHOUSE", str(DBT_DIR.parent / ".ops_platform" / "warehouse.duckdb"))
        dbt_resource().cli(
            ["parse", "--quiet"], target_path=DBT_PROJECT.target_path).wait()
    return manifest


class SummitDbtTranslator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props) -> str | None:
        return "staging" if dbt_resource_props["resource_type"] == "model" else None

    def get_asset_check_spec(self, asset_spec, manifest, unique_id, project):
        """A dbt test as a check that says what it tests (dbt gives none unless written):
        ``not_null on tenant_id``, ``accepted_values on tier: free, pro, enterprise``."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or spec.description:
            return spec
        node = manifest.get("nodes", {}).get(unique_id, {})
        test = node.get("test_metadata") or {}
        kwargs = {k: v for k, v in (test.get("kwargs") or {}).items() if k not in ("model", "column_name")}
        column = node.get("column_name") or (test.get("kwargs") or {}).get("column_name")
        said = f"dbt test {test.get('name') or node.get('name', unique_id)}" + (f" on {column}" if column else "")
        if values := kwargs.pop("values", None):
            said += ": " + ", ".join(map(str, values))
        said += "".join(f"; {k} {v}" for k, v in kwargs.items())
        return spec._replace(description=said)

    def get_owners(self, dbt_resource_props):
        """The model's ``meta.owner`` in _staging.yml (the team owning its raw source), else SRE."""
        meta = (dbt_resource_props.get("config") or {}).get("meta") or dbt_resource_props.get("meta") or {}
        return [meta.get("owner") or "team:sre"]


@dbt_assets(manifest=ensure_manifest(), project=DBT_PROJECT, dagster_dbt_translator=SummitDbtTranslator(),
            pool="duckdb")
def summit_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
    """Build every dbt model and run its tests (reported as asset checks)."""
    # profiles.yml reads the warehouse path from here: one source of truth, the resource.
    os.environ["OPS_PLATFORM_WAREHOUSE"] = warehouse.path
    # A build's artifacts (run results, partial-parse state, and its log: dagster-dbt writes
    # dbt.log beside them) are run state: in the state folder, so two homes never share them,
    # and a home's builds after its first re-parse only what changed (runs are serialised by
    # the duckdb pool). The project's own target folder keeps only the manifest
    # `make dbt-manifest` parses, which defines the assets.
    yield from dbt.cli(["build"], context=context, target_path=StatePaths.from_env().home / "dbt" / "target").stream()
