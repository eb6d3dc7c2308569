"""Generated protobuf and gRPC modules of the InsightX contracts (`insightx.v1`); see protos/."""
