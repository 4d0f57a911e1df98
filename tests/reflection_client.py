"""A client in another language with no .proto files, as a new user would write one:
discovers the orchestrator through gRPC reflection (grpcio-reflection, which speaks only
v1alpha), then calls ListJobs and GetCostReport with the client token, building every
message from the descriptors the server sent. Prints one JSON object: the services it
found, the jobs listed, and the fields of the job's cost report.

Usage: reflection_client.py HOST:PORT TOKEN CA_PEM JOB_ID
"""
import json
import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class Bearer(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer TOKEN` to every call."""

    def __init__(self, token):
        self.metadata = [("authorization", f"Bearer {token}")]

    def _with_token(self, details):
        return details._replace(metadata=list(details.metadata or []) + self.metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


def call(channel, pool, method_name, **fields):
    method = pool.FindMethodByName(method_name)
    request_type = message_factory.GetMessageClass(method.input_type)
    reply_type = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    stub = channel.unary_unary(
        path,
        request_serializer=request_type.SerializeToString,
        response_deserializer=reply_type.FromString,
    )
    return json_format.MessageToDict(stub(request_type(**fields)), preserving_proto_field_name=True)


def main():
    address, token, ca, job_id = sys.argv[1:5]
    with open(ca, "rb") as pem:
        credentials = grpc.ssl_channel_credentials(root_certificates=pem.read())
    channel = grpc.intercept_channel(grpc.secure_channel(address, credentials), Bearer(token))
    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())
    pool = DescriptorPool(database)
    jobs = call(channel, pool, "framefleet.v1.Orchestrator.ListJobs")
    report = call(channel, pool, "framefleet.v1.Orchestrator.GetCostReport", job_id=job_id)
    print(json.dumps({
        "services": services,
        "jobs": [job["id"] for job in jobs.get("jobs", [])],
        "report": report.get("report", {}),
    }))


if __name__ == "__main__":
    main()
