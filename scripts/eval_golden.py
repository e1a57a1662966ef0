"""`make eval-golden`: the golden dataset through a fresh local mesh, graded.

Starts a mesh of its own (embedded Postgres in a temporary folder, the offline LLM
unless LLM_BASE_URL / OPENAI_API_KEY are set, every service), registers an admin,
runs `python -m services.evals.client golden`, stops the mesh, and exits with golden's code:
0 passed, 2 a threshold crossed or an expectation missed, 1 the run itself failed.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ROOT

ADMIN_EMAIL = "golden-admin@example.com"


def main() -> int:
    password = "Gold-" + secrets.token_urlsafe(12) + "1!"
    with tempfile.TemporaryDirectory(prefix="agentmesh-golden-") as tmp:
        mesh = Mesh(
            data_dir=Path(tmp) / "data",
            log_dir=Path(tmp) / "logs",
            ephemeral_ports=True,
            extra_env={"LOG_LEVEL": "WARNING"},
        )
        try:
            mesh.start(["auth", "sessions", "agent", "memory", "evals"])
            with grpc.insecure_channel(mesh.addr("auth")) as channel:
                auth_pb2_grpc.AuthServiceStub(channel).Register(
                    auth_pb2.RegisterRequest(email=ADMIN_EMAIL, password=password), timeout=30
                )
            # Registration grants no role: the operator command makes the admin.
            subprocess.run(
                [sys.executable, "-m", "services.auth", "grant-role", "--email", ADMIN_EMAIL, "--role", "admin"],
                cwd=ROOT,
                env=mesh.env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            env = {**mesh.env, "EVALS_ADMIN_EMAIL": ADMIN_EMAIL, "EVALS_ADMIN_PASSWORD": password}
            return subprocess.run(
                [sys.executable, "-m", "services.evals.client", "golden", *sys.argv[1:]], cwd=ROOT, env=env
            ).returncode
        finally:
            mesh.stop()


if __name__ == "__main__":
    sys.exit(main())
