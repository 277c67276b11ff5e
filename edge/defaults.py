"""The API's defaults, in one torch-free place: the functions use them and the CLI's --help quotes them."""

MIN_ACCURACY = 0.99  # planner: lowest accepted metric vs fp32 (1.0 = identical)
WARMUP = 5  # bench: untimed inferences before timing
ITERATIONS = 50  # bench: timed inferences
TIMEOUT_S = 600.0  # bench: seconds before the run on the device is stopped
