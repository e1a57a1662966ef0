"""The checks behind `make k8s-check`, one module per concern; scripts/k8s_check.py runs them."""
