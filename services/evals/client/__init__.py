"""The evals command line (`run`, `golden`): a gRPC client of the mesh, not part of the server.

    python -m services.evals.client run [--metrics a,b] [--since ISO] [--limit N] [--session ID] [--regrade]
    python -m services.evals.client golden [--dataset PATH]

It lives beside the server because it reads the same settings (EvalsSettings: addresses, the
admin login, the golden dataset) and ships with the metric files it is checked against, but
nothing in services.evals imports it (tests/evals/test_golden.py checks that): the server's
image and start-up do not carry tqdm, the golden dataset runner or login code paths.
"""
