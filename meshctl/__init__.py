"""Start and stop a local mesh: used by `make run`, the tests, the load tests and benchmarks."""
