"""Calls the Workload API over a Unix socket with Python grpcio (gRPC C-core), with no
authority override, and prints one JSON object describing what it got.

Usage: workload_client.py SOCKET_PATH STUBS_DIR
"""

import json
import sys

import grpc

sys.path.insert(0, sys.argv[2])
import workload_pb2  # noqa: E402
import workload_pb2_grpc  # noqa: E402

HEADER = [("workload.spiffe.io", "true")]
CALLS_ON_ONE_CHANNEL = 300


def main():
    result = {}
    # `unix:<path>` and nothing else: grpcio derives :authority from the path.
    with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)

        jwt = stub.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["python"]), metadata=HEADER, timeout=10
        )
        result["jwt_ids"] = [svid.spiffe_id for svid in jwt.svids]

        validated = stub.ValidateJWTSVID(
            workload_pb2.ValidateJWTSVIDRequest(audience="python", svid=jwt.svids[0].svid),
            metadata=HEADER,
            timeout=10,
        )
        result["validated_id"] = validated.spiffe_id
        result["validated_sub"] = validated.claims["sub"]
        result["validated_aud"] = list(validated.claims["aud"])

        stream = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=10)
        first = next(stream)
        result["x509_ids"] = [svid.spiffe_id for svid in first.svids]
        result["x509_key_len"] = len(first.svids[0].x509_svid_key)
        result["federated"] = sorted(first.federated_bundles.keys())
        stream.cancel()

        bundles = next(
            stub.FetchX509Bundles(workload_pb2.X509BundlesRequest(), metadata=HEADER, timeout=10)
        )
        result["bundle_keys"] = sorted(bundles.bundles.keys())

        try:
            stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["x"]), timeout=10)
            result["no_header"] = "OK"
        except grpc.RpcError as error:
            result["no_header"] = error.code().name
            result["no_header_message"] = error.details()

        ok = 0
        for i in range(CALLS_ON_ONE_CHANNEL):
            if i % 2 == 0:
                response = stub.FetchJWTSVID(
                    workload_pb2.JWTSVIDRequest(audience=["aud-%d" % (i % 7)]),
                    metadata=HEADER,
                    timeout=10,
                )
                ok += len(response.svids) == 2
            else:
                jwt_stream = stub.FetchJWTBundles(
                    workload_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=10
                )
                ok += len(next(jwt_stream).bundles) == 2
                jwt_stream.cancel()
        result["many_calls_ok"] = ok
        result["many_calls"] = CALLS_ON_ONE_CHANNEL

    print(json.dumps(result))


if __name__ == "__main__":
    main()
