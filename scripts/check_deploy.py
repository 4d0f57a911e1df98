#!/usr/bin/env python3
"""Checks deploy/kubernetes against the Kubernetes and KEDA schemas and against the code.

- Every manifest kustomization.yaml applies, and the example Secret, validates strictly:
  Kubernetes kinds against the schemas bundled with kubernetes-validate (PyPI), the KEDA
  ScaledObject against deploy/schemas/keda-scaledobject.schema.json (from KEDA's CRD).
- Ports: the containers' and the Service's gRPC and metrics ports are the ones
  framefleet.toml makes the processes listen on; the workers' advertised URL and their
  orchestrator URL point at them.
- The scaler: the trigger is KEDA's external(-push) scaler at the orchestrator Service's
  gRPC port, the orchestrator serves `externalscaler.ExternalScaler`, the trigger's
  metadata keys are the ones orchestrator/src/api/scaler.rs reads, and they agree with the
  workers' gpu_type and slots; the ScaledObject scales the worker Deployment.
- Config keys: every FRAMEFLEET_SECTION__KEY variable names a key of
  deploy/framefleet.example.toml (which common/src/config.rs's tests load with unknown keys
  refused).
- Secrets, ConfigMaps, volumes: every secretKeyRef is a key of secret.example.yaml, every
  ConfigMap is made by the kustomization, every claim is a PersistentVolumeClaim here; the
  workers' termination grace outlasts their drain grace.

Exits 1 listing every problem found. Usage: scripts/check_deploy.py
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"

problems = []


def problem(text):
    problems.append(text)


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def port_of(address):
    return int(address.rsplit(":", 1)[1].split("/")[0])


def containers(resources):
    for resource in resources:
        if resource["kind"] == "Deployment":
            spec = resource["spec"]["template"]["spec"]
            for container in spec["containers"]:
                yield resource, spec, container


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def container_port(container, name):
    return next((p["containerPort"] for p in container.get("ports", []) if p["name"] == name), None)


def validate_schemas(resources, secret):
    schema = json.loads((ROOT / "deploy/schemas/keda-scaledobject.schema.json").read_text())
    for resource in resources + [secret]:
        name = f'{resource["kind"]}/{resource["metadata"]["name"]}'
        try:
            if resource["apiVersion"].startswith("keda.sh/"):
                jsonschema.validate(resource, schema)
            else:
                kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as error:
            problem(f"{name} does not match its schema: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problem(f"{name}: no schema for {resource['apiVersion']} in Kubernetes {KUBERNETES_VERSION}")


def check_ports(config, resources):
    service = next(r for r in resources if r["kind"] == "Service")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    metrics = port_of(config["telemetry"]["metrics_listen"])
    for deployment, _, container in containers(resources):
        name = deployment["metadata"]["name"]
        role = "orchestrator" if "orchestrator" in name else "worker"
        grpc = port_of(config[role]["listen"])
        if container_port(container, "grpc") != grpc:
            problem(f"{name}: container port grpc is not {role}.listen's port {grpc}")
        if container_port(container, "metrics") != metrics:
            problem(f"{name}: container port metrics is not telemetry.metrics_listen's {metrics}")
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/port", str(metrics)) != str(metrics):
            problem(f"{name}: prometheus.io/port is not {metrics}")
        advertised = env_of(container).get("FRAMEFLEET_WORKER__ADVERTISE_URL")
        if advertised and port_of(advertised["value"]) != grpc:
            problem(f"{name}: FRAMEFLEET_WORKER__ADVERTISE_URL is not on port {grpc}")
        if role == "orchestrator":
            target = service_ports["grpc"]["targetPort"]
            if target != grpc:
                problem(f"Service grpc targetPort {target} is not orchestrator.listen's {grpc}")
    url = config["worker"]["orchestrator_url"]
    expected = f'http://{service["metadata"]["name"]}:{service_ports["grpc"]["port"]}'
    if url.rstrip("/") != expected:
        problem(f"worker.orchestrator_url {url} is not the orchestrator Service {expected}")
    return service, service_ports


def check_scaler(config, resources, service, service_ports):
    scaled = [r for r in resources if r["kind"] == "ScaledObject"]
    served = (ROOT / "orchestrator/src/api/server.rs").read_text()
    vendored = (ROOT / "proto/keda/externalscaler.proto").read_text()
    if "ExternalScalerServer" not in served or "service ExternalScaler" not in vendored:
        problem("the orchestrator does not serve externalscaler.ExternalScaler")
    read_keys = set(re.findall(r'get\("(\w+)"\)', (ROOT / "orchestrator/src/api/scaler.rs").read_text()))
    deployments = {r["metadata"]["name"] for r in resources if r["kind"] == "Deployment"}
    for resource in scaled:
        target = resource["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problem(f"ScaledObject scales {target}, which is no Deployment here")
        for trigger in resource["spec"]["triggers"]:
            if trigger["type"] not in ("external", "external-push"):
                problem(f"trigger {trigger['type']}: expected KEDA's external-push scaler")
                continue
            metadata = trigger["metadata"]
            address = f'{service["metadata"]["name"]}:{service_ports["grpc"]["port"]}'
            if metadata.get("scalerAddress") != address:
                problem(f"scalerAddress {metadata.get('scalerAddress')} is not {address}")
            for key in set(metadata) - read_keys - {"scalerAddress"}:
                problem(f"trigger metadata {key} is read by nothing in orchestrator/src/api/scaler.rs")
            if metadata.get("gpuType", config["worker"]["gpu_type"]) != config["worker"]["gpu_type"]:
                problem("trigger gpuType is not worker.gpu_type")
            if int(metadata.get("slotsPerWorker", "1")) != config["worker"].get("slots", 1):
                problem("trigger slotsPerWorker is not worker.slots")


def check_config_keys(resources):
    example = tomllib.loads((ROOT / "deploy/framefleet.example.toml").read_text())
    for deployment, _, container in containers(resources):
        for name in env_of(container):
            match = re.fullmatch(r"FRAMEFLEET_([A-Z0-9_]+?)__([A-Z0-9_]+)", name)
            if not name.startswith("FRAMEFLEET_"):
                continue
            section, key = (match.group(1).lower(), match.group(2).lower()) if match else ("", "")
            if key not in example.get(section, {}):
                problem(f"{deployment['metadata']['name']}: {name} is no configuration key")


def check_references(config, resources, secret, kustomization):
    secret_keys = set(secret["stringData"])
    config_maps = {g["name"] for g in kustomization.get("configMapGenerator", [])}
    claims = {r["metadata"]["name"] for r in resources if r["kind"] == "PersistentVolumeClaim"}
    for deployment, pod, container in containers(resources):
        name = deployment["metadata"]["name"]
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference and (reference["name"] != secret["metadata"]["name"]
                              or reference["key"] not in secret_keys):
                problem(f"{name}: {variable['name']} reads a secret key secret.example.yaml lacks")
        for volume in pod.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problem(f"{name}: ConfigMap {volume['configMap']['name']} is not generated")
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and claim not in claims:
                problem(f"{name}: claim {claim} is no PersistentVolumeClaim here")
        if "worker" in name:
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace <= config["worker"]["drain_grace_seconds"]:
                problem(f"{name}: terminationGracePeriodSeconds {grace} does not outlast "
                        "worker.drain_grace_seconds")


def main():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    resources = [d for f in kustomization["resources"] for d in documents(DEPLOY / f)]
    secret = documents(DEPLOY / "secret.example.yaml")[0]
    config = tomllib.loads((DEPLOY / "framefleet.toml").read_text())
    validate_schemas(resources, secret)
    service, service_ports = check_ports(config, resources)
    check_scaler(config, resources, service, service_ports)
    check_config_keys(resources)
    check_references(config, resources, secret, kustomization)
    for text in problems:
        print(f"check_deploy: {text}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_deploy: {len(resources) + 1} manifests match their schemas and the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
