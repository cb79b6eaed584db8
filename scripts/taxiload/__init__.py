"""The load tools of taxi (scripts/bench_http, scripts/bench_ws, scripts/soak) and the process harness they share
with the tests (taxiload.harness). Not part of the server: the package lives under scripts/, which the scripts put
on sys.path and pytest's ``pythonpath`` option (setup.cfg) adds for the tests. See scripts/README.md."""
