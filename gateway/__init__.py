"""HTTP/JSON gateway to the agentmesh gRPC services, driven by the `google.api.http` annotations."""
