"""The benchmark: our fleet against the idiomatic Celery baseline, on the API stand-in.

A program, not a test: ``python -m ops.bench.run --quick`` (see README.md beside this
file). Every service it needs (Redis, the stand-in, the Celery workers) runs as a
subprocess on a free loopback port and is stopped by pid at the end.
"""
