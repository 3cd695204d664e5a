#!/usr/bin/env python3
"""Checks the manifests in this folder without a cluster.

1. YAML syntax of every *.yaml file (PyYAML).
2. Kubernetes objects (Deployment, Service, PersistentVolumeClaim) against the Kubernetes OpenAPI schemas bundled in
   the PyPI package kubernetes-validate, strict (unknown fields are errors).
3. FlinkDeployment against the CRD schema shipped in org.apache.flink:flink-kubernetes-operator-api (the jar in the
   local Maven repository; fetch it with
   `mvn dependency:get -Dartifact=org.apache.flink:flink-kubernetes-operator-api:1.10.0 -Dtransitive=false`),
   and its TaskManager pod template as a strict Kubernetes Pod.
4. PodMonitor (Prometheus Operator): its CRD schema is not available offline, so it is checked against what it must
   match instead: its selector selects the TaskManager pods of a FlinkDeployment here (the operator labels them
   app=<name>, component=taskmanager), and each endpoint's port is a named port of the TaskManager's main container.

Usage: pip install pyyaml jsonschema kubernetes-validate && python3 docs/kubernetes/validate.py
"""
import glob
import os
import sys
import zipfile

import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
K8S_VERSION = "1.30.0"
OPERATOR_API = os.path.expanduser(
    "~/.m2/repository/org/apache/flink/flink-kubernetes-operator-api/1.10.0/"
    "flink-kubernetes-operator-api-1.10.0.jar")
# the CRD in apiextensions.k8s.io/v1 form; it serves FlinkDeployment version v1beta1
CRD = "META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml"


def crd_schema():
    with zipfile.ZipFile(OPERATOR_API) as jar:
        crd = yaml.safe_load(jar.read(CRD))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    return version["schema"]["openAPIV3Schema"]


def check_k8s(doc, where):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    print(f"ok  {where}: {doc['kind']} {doc['metadata']['name']} (Kubernetes {K8S_VERSION} schema, strict)")


def check_pod_monitor(doc, deployments, where):
    spec = doc["spec"]
    allowed = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels",
               "sampleLimit", "targetLimit"}
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"PodMonitor spec has fields this check does not know: {sorted(unknown)}")
    selector = spec["selector"]["matchLabels"]
    targets = [d for d in deployments
               if selector == {"app": d["metadata"]["name"], "component": "taskmanager"}]
    if not targets:
        raise ValueError(f"PodMonitor selector {selector} selects no TaskManager pods of the FlinkDeployments here "
                         f"({[d['metadata']['name'] for d in deployments]}): use app=<name>, component=taskmanager")
    for deployment in targets:
        containers = deployment["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]
        main = next(c for c in containers if c["name"] == "flink-main-container")
        ports = {p.get("name") for p in main.get("ports", [])}
        for endpoint in spec["podMetricsEndpoints"]:
            if endpoint.get("port") not in ports:
                raise ValueError(f"PodMonitor endpoint port {endpoint.get('port')!r} is not a named port of "
                                 f"{deployment['metadata']['name']}'s flink-main-container ({sorted(ports)})")
            if endpoint.get("path", "/metrics") != "/metrics":
                raise ValueError("the recycler serves Prometheus text at /metrics")
    print(f"ok  {where}: PodMonitor {doc['metadata']['name']} selects the TaskManagers of "
          f"{[d['metadata']['name'] for d in targets]} at a named admin port")


def main():
    failures = 0
    schema = None
    paths = sorted(glob.glob(os.path.join(HERE, "*.yaml")))
    deployments = []
    for path in paths:
        with open(path) as f:
            try:
                deployments += [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "FlinkDeployment"]
            except yaml.YAMLError:
                pass  # reported below
    for path in paths:
        name = os.path.basename(path)
        try:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
            print(f"ok  {name}: YAML syntax, {len(docs)} document(s)")
            for doc in docs:
                if doc["kind"] == "FlinkDeployment":
                    schema = schema or crd_schema()
                    jsonschema.validate(doc, schema)
                    print(f"ok  {name}: FlinkDeployment {doc['metadata']['name']} (operator 1.10.0 CRD schema)")
                    for role in ("jobManager", "taskManager"):
                        template = doc["spec"].get(role, {}).get("podTemplate")
                        if template:
                            pod = {"apiVersion": "v1", "kind": "Pod",
                                   "metadata": {"name": role.lower() + "-pod-template"}, **template}
                            pod["metadata"].update(template.get("metadata", {}))
                            pod["metadata"]["name"] = role.lower() + "-pod-template"
                            check_k8s(pod, f"{name} {role}.podTemplate")
                elif doc["kind"] == "PodMonitor":
                    check_pod_monitor(doc, deployments, name)
                else:
                    check_k8s(doc, name)
        except Exception as e:  # report every file, then fail
            failures += 1
            where = "/".join(str(p) for p in getattr(e, "absolute_path", []) or [])
            print(f"FAIL {name}: {getattr(e, 'message', str(e))}" + (f" at {where}" if where else ""))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
