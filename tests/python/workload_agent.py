"""Python grpcio (gRPC C-core) against a real lanyard agent's Workload API socket, with no
authority override: grpcio then sends `:authority` made from the socket path.

Usage: workload_agent.py SOCKET_PATH STUBS_DIR

Prints JSON lines. The first describes the unary calls, the bundle streams, a call without the
security header and many calls on one channel; the second ("phase": "first") the first message of
a FetchX509SVID stream. It then waits on that stream for a message with other SVIDs (the test
registers another entry for this process) and prints it ("phase": "update").
"""

import json
import sys

import grpc

sys.path.insert(0, sys.argv[2])
import workload_pb2  # noqa: E402
import workload_pb2_grpc  # noqa: E402

HEADER = [("workload.spiffe.io", "true")]
CALLS_ON_ONE_CHANNEL = 300
TIMEOUT = 20


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    # `unix:<path>` and nothing else: grpcio derives :authority from the path.
    with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        result = {}

        jwt = stub.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["python"]), metadata=HEADER, timeout=TIMEOUT
        )
        result["jwt_ids"] = [svid.spiffe_id for svid in jwt.svids]
        validated = stub.ValidateJWTSVID(
            workload_pb2.ValidateJWTSVIDRequest(audience="python", svid=jwt.svids[0].svid),
            metadata=HEADER,
            timeout=TIMEOUT,
        )
        result["validated_id"] = validated.spiffe_id
        result["validated_aud"] = list(validated.claims["aud"])

        x509_bundles = next(
            stub.FetchX509Bundles(
                workload_pb2.X509BundlesRequest(), metadata=HEADER, timeout=TIMEOUT
            )
        )
        result["x509_bundle_keys"] = sorted(x509_bundles.bundles.keys())
        jwt_bundles = next(
            stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=TIMEOUT)
        )
        result["jwt_bundle_keys"] = sorted(jwt_bundles.bundles.keys())

        try:
            stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["x"]), timeout=TIMEOUT)
            result["no_header"] = "OK"
        except grpc.RpcError as error:
            result["no_header"] = error.code().name

        ok = 0
        for i in range(CALLS_ON_ONE_CHANNEL):
            if i % 2 == 0:
                response = stub.FetchJWTSVID(
                    workload_pb2.JWTSVIDRequest(audience=["aud-%d" % (i % 7)]),
                    metadata=HEADER,
                    timeout=TIMEOUT,
                )
                ok += len(response.svids) == 1
            else:
                stream = stub.FetchJWTBundles(
                    workload_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=TIMEOUT
                )
                ok += len(next(stream).bundles) == 1
                stream.cancel()
        result["many_calls_ok"] = ok
        result["many_calls"] = CALLS_ON_ONE_CHANNEL
        emit(result)

        # A stream that stays open: the full state at once, then again on a change.
        stream = stub.FetchX509SVID(
            workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=3 * TIMEOUT
        )
        first = next(stream)
        emit(
            {
                "phase": "first",
                "ids": [svid.spiffe_id for svid in first.svids],
                "key_len": len(first.svids[0].x509_svid_key),
                "bundle_len": len(first.svids[0].bundle),
            }
        )
        first_ids = [svid.spiffe_id for svid in first.svids]
        for update in stream:
            ids = [svid.spiffe_id for svid in update.svids]
            if ids != first_ids:
                emit({"phase": "update", "ids": ids})
                break
        stream.cancel()


if __name__ == "__main__":
    main()
