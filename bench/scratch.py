"""Scratch PostgreSQL databases for the benchmark: each made new for one
run and dropped after it, whatever the run did."""

import os
import subprocess


def postgres_database(admin_url, prefix):
    """Creates a database named after `prefix` and this process; returns
    (its URL, a function that drops it, connections and all)."""
    name = f"{prefix}_{os.getpid()}"
    subprocess.run(["psql", admin_url, "-qc", f"CREATE DATABASE {name}"], check=True)

    def drop():
        subprocess.run(["psql", admin_url, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop
