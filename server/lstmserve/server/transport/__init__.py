"""gRPC transport: protobuf <-> numpy, status codes, health; all model work is in serving/ and engine/."""
