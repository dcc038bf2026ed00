"""The launch layer: the only place that imports ray (Ray Data, Ray Train, Ray Tune wiring)."""
import os
from pathlib import Path

# Ray Data reads its logging config when it is first imported, in this process and in every worker the
# local cluster starts (they inherit the environment): set before any launch module imports ray.data
os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(Path(__file__).with_name("ray_data_logging.yaml")))
