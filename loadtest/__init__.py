"""Locust load tests of the mesh (`make loadtest`) and the seed's 1,500-user stress test."""
