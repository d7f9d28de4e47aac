"""The Summit world simulator: a deterministic, vectorised multi-tenant SaaS world.

``generate_world`` writes a landing zone (what real exporters emit) and a separate truth
folder (what really happened) that only evaluations and tests read.
"""

from .config import PRESETS, WorldConfig, preset
from .generate import generate_world, load_manifest, world_exists

__all__ = ["PRESETS", "WorldConfig", "generate_world", "load_manifest", "preset", "world_exists"]
