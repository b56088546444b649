#!/usr/bin/env python3
"""Checks docker-compose.yml without a Docker engine: the compose-spec schema
(check-jsonschema's vendored copy) and what this project promises of it:
every service has a healthcheck, the tokend replicas wait for a healthy
PostgreSQL, run what the image runs with the Dockerfile's HEALTHCHECK and
are reached only through the load balancer, whose nginx configuration names
exactly them; data is in a named volume, and no secret is written in the file.

    pip install check-jsonschema pyyaml && scripts/check-compose.py
"""
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


schema = subprocess.run(
    ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE],
    capture_output=True, text=True)
check(schema.returncode == 0, f"compose-spec schema: {schema.stdout}{schema.stderr}")

doc = yaml.safe_load(open(COMPOSE))
services = doc.get("services", {})
for name, service in services.items():
    check("healthcheck" in service, f"{name}: no healthcheck")
    for dependency, spec in service.get("depends_on", {}).items():
        check(dependency in services, f"{name}: depends on unknown {dependency}")
        check(spec.get("condition") == "service_healthy", f"{name}: waits for {dependency} without service_healthy")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./"):
            check(os.path.exists(os.path.join(ROOT, source)), f"{name}: {source} does not exist")
        else:
            check(source in (doc.get("volumes") or {}), f"{name}: volume {source} not declared")

replicas = {name: spec for name, spec in services.items() if name.startswith("tokend-")}
check(len(replicas) >= 2, "at least two tokend replicas (tokend-a, tokend-b, …) expected")
dockerfile = open(os.path.join(ROOT, "Dockerfile")).read()
image_check = re.search(r'HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])', dockerfile)
check(image_check is not None, "Dockerfile: no HEALTHCHECK CMD found")
for name, tokend in replicas.items():
    check(tokend.get("build") == ".", f"{name}: must build the Dockerfile here")
    check("command" not in tokend and "entrypoint" not in tokend, f"{name}: must run the image's own command")
    check("postgres" in tokend.get("depends_on", {}), f"{name}: must wait for postgres")
    check("ports" not in tokend, f"{name}: reached through the load balancer only, no published port")
    env = tokend.get("environment", {})
    check(env.get("DATABASE_URL", "").startswith("postgres://"), f"{name}: DATABASE_URL must be PostgreSQL")
    check(env.get("TOKEND_PROFILE") == "production", f"{name}: production profile expected")
    check(env.get("TOKEND__RATE_LIMIT__CLIENT_IP_HEADER") == "X-Forwarded-For",
          f"{name}: behind the balancer the client address comes from X-Forwarded-For")
    key = str(env.get("TOKEND__JWT__SIGNING_KEY", ""))
    check(re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", key) is not None, f"{name}: the signing key must come from the environment (${{VAR:?…}}), never the file")
    if image_check:
        check(yaml.safe_load(image_check.group(1)) == tokend.get("healthcheck", {}).get("test", [None])[1:],
              f"{name}: healthcheck differs from the Dockerfile's")

# The balancer: the shipped nginx configuration, its upstream naming exactly
# the replicas, started once they are healthy.
lb = services.get("lb", {})
check("./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in lb.get("volumes", []),
      "lb: must mount deploy/nginx.conf as conf.d/default.conf")
check(set(lb.get("depends_on", {})) >= set(replicas), "lb: must wait for every replica")
upstream = set(re.findall(r"^\s*server (tokend-[a-z0-9-]+):8000\b", open(os.path.join(ROOT, "deploy", "nginx.conf")).read(), re.M))
check(upstream == set(replicas), f"deploy/nginx.conf upstream {sorted(upstream)} differs from the replicas {sorted(replicas)}")
check("pgdata" in (doc.get("volumes") or {}), "named volume pgdata missing")
for line in open(COMPOSE):
    check(not re.search(r"PASSWORD:?-", line), f"a password with a default value: {line.strip()}")
    check(not re.search(r"(?i)(signing_key|secret)\s*:\s*['\"]?[A-Za-z0-9]{16,}", line), f"literal secret? {line.strip()}")

if problems:
    print("docker-compose.yml: " + "\n  ".join(["problems:"] + problems), file=sys.stderr)
    sys.exit(1)
print(f"docker-compose.yml ok: {len(services)} services, schema valid")
