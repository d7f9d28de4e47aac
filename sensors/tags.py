"""The run tags Dagster sets on a run a sensor requests, which the sensors read back.

Spelt here rather than imported from Dagster's private modules, which move between releases.
"""

RUN_KEY_TAG = "dagster/run_key"  # the request's run key: a sensor finds its own earlier run by it
SENSOR_NAME_TAG = "dagster/sensor_name"  # the sensor that requested the run
