"""The suite's fixtures, as plugins: every test module and every pytest-xdist worker gets them from here, and no
test module imports conftest (plain helpers are in helpers.py)."""

pytest_plugins = [
    "fixtures.workdir",  # autouse: each test in its own tmp_path, the environment reset; expt_cache
    "fixtures.stores",  # store, writer_mode
    "fixtures.summary",  # summary_line: a test's line under the session's summary (the docs' command count)
    "fixtures.bad_input",  # tried_bad_input, and the count in the summary
    "servers",  # postgres, mlflow_server: a real PostgreSQL and `mlflow server`, once per session (per worker)
    "browsers",  # browser: headless Chromium, installed when missing
    "fixtures.cluster",  # dask_cluster: a Dask scheduler, two workers and an mlflow server they share
]
