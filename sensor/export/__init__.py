"""Where alerts leave the sensor: the gRPC stream (grpc_server) and the daemon's log."""
