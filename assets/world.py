"""The files the platform reads rather than computes, as external assets: lineage starts here."""

import dagster as dg

LANDING_KEY = dg.AssetKey(["world", "landing"])
TRUTH_KEY = dg.AssetKey(["world", "truth"])

landing_zone = dg.AssetSpec(
    LANDING_KEY, group_name="world", kinds={"parquet"}, owners=["team:sre"],
    description="The landing zone (`ops-platform paths` shows where: <state>/world/landing by default): the files "
                "exporters drop, or the world simulator writes, one dt=YYYY-MM-DD folder per arrival day. The raw "
                "assets read it through their data contracts; the backtests replay it whole.")
truth_folder = dg.AssetSpec(
    TRUTH_KEY, group_name="world", kinds={"parquet"}, owners=["team:sre"],
    description="The world's ground truth (<state>/world/truth): incidents, bad builds, blips, true per-tenant "
                "cost, injected anomalies. No decision reads it; the backtests and scores judge the decisions "
                "against it.")
