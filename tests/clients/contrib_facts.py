"""Reads contrib/k8s/deployment.yaml (PyYAML) and contrib/container/site.toml
(tomllib) and prints the facts that must agree as JSON: the probes' paths
and port, the grace period, the health path, drain_delay, graceful_timeout
and the listen port."""
import json
import sys
import tomllib

import yaml

root = sys.argv[1]
docs = list(yaml.safe_load_all(open(f"{root}/contrib/k8s/deployment.yaml")))
deploy = next(d for d in docs if d["kind"] == "Deployment")
pod = deploy["spec"]["template"]["spec"]
container = pod["containers"][0]
site = tomllib.load(open(f"{root}/contrib/container/site.toml", "rb"))


def seconds(v):
    return float(v[:-1]) if isinstance(v, str) and v.endswith("s") else float(v)


print(json.dumps({
    "probe_paths": sorted({container[p]["httpGet"]["path"]
                           for p in ("startupProbe", "readinessProbe") if "httpGet" in container[p]}),
    "container_port": container["ports"][0]["containerPort"],
    "grace": pod["terminationGracePeriodSeconds"],
    "health_path": site["server"]["health_path"],
    "drain_delay": seconds(site["server"]["drain_delay"]),
    "graceful_timeout": seconds(site["app"]["graceful_timeout"]),
    "listen_port": int(site["server"]["listen"][0].rsplit(":", 1)[1]),
    "kinds": [d["kind"] for d in docs],
}))
