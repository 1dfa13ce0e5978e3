#!/usr/bin/env python3
"""Writes the pinned, trimmed copies of the OCSF and ECS schemas that common/tests/formats.rs
validates the OCSF events and ECS documents against. See README.md beside this file.

usage: refresh.py OCSF_SCHEMA_CHECKOUT OCSF_REF ECS_CHECKOUT ECS_REF
(the checkouts are git repositories of github.com/ocsf/ocsf-schema and github.com/elastic/ecs;
the files are read at the given tags with `git show`, the work trees are not used)
"""
import json, os, subprocess, sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# The classes the OCSF table uses and the objects its events hold (their `extends` parents and
# included profiles follow). An event using anything else fails validation: add it here.
OCSF_CLASSES = ["iam/account_change", "iam/authentication", "iam/entity_management",
                "application/scan_activity"]
OCSF_OBJECTS = ["metadata", "product", "reporter", "user", "actor", "network_endpoint",
                "http_request", "managed_entity", "organization", "service", "scan"]
# The ECS field sets the documents use.
ECS_FIELDSETS = ["@timestamp", "message", "labels", "ecs", "event", "user", "source",
                 "user_agent", "organization", "observer"]


def show(repo, ref, path):
    return subprocess.run(["git", "-C", repo, "show", f"{ref}:{path}"], check=True,
                          capture_output=True).stdout


def rev(repo, ref):
    return subprocess.run(["git", "-C", repo, "rev-parse", f"{ref}^{{commit}}"], check=True,
                          capture_output=True, text=True).stdout.strip()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def ocsf(repo, ref):
    out = os.path.join(HERE, "ocsf")
    files = {}  # path -> parsed json

    def take(path):
        if path in files:
            return files[path]
        d = json.loads(show(repo, ref, path))
        files[path] = d
        for inc in d.get("attributes", {}).get("$include", []):
            take(inc)
        return d

    def take_class(path):
        d = take(f"events/{path}.json")
        parent = d.get("extends")
        if parent:
            # A class extends one of its category (iam, application) or base_event.
            cat = os.path.dirname(path)
            for p in (f"events/{cat}/{parent}.json", f"events/{parent}.json"):
                try:
                    take_class(p[len("events/"):-len(".json")])
                    break
                except subprocess.CalledProcessError:
                    continue

    def take_object(name):
        d = take(f"objects/{name}.json")
        if d.get("extends"):
            take_object(d["extends"])

    for c in OCSF_CLASSES:
        take_class(c)
    for o in OCSF_OBJECTS:
        take_object(o)
    names = set()
    for d in files.values():
        names.update(k for k in d.get("attributes", {}) if k != "$include")
    dictionary = json.loads(show(repo, ref, "dictionary.json"))
    dictionary["attributes"] = {k: v for k, v in dictionary["attributes"].items() if k in names}
    files["dictionary.json"] = dictionary
    categories = json.loads(show(repo, ref, "categories.json"))
    used = {c.split("/")[0] for c in OCSF_CLASSES}
    categories["attributes"] = {k: v for k, v in categories["attributes"].items() if k in used}
    files["categories.json"] = categories
    files["version.json"] = json.loads(show(repo, ref, "version.json"))
    for path, d in files.items():
        write(os.path.join(out, path), d)
    return rev(repo, ref), files["version.json"]["version"]


def ecs(repo, ref):
    flat = yaml.safe_load(show(repo, ref, "generated/ecs/ecs_flat.yml"))
    keep = {}
    for name, f in flat.items():
        if name.split(".")[0] not in ECS_FIELDSETS:
            continue
        entry = {k: f[k] for k in ("type", "normalize", "object_type", "level") if k in f}
        if "allowed_values" in f:
            entry["allowed_values"] = [
                {k: v[k] for k in ("name", "expected_event_types") if k in v}
                for v in f["allowed_values"]]
        keep[name] = entry
    version = show(repo, ref, "version").decode().strip()
    write(os.path.join(HERE, "ecs", "ecs_flat.json"), {"version": version, "fields": keep})
    return rev(repo, ref), version


if __name__ == "__main__":
    ocsf_repo, ocsf_ref, ecs_repo, ecs_ref = sys.argv[1:5]
    print("ocsf", ocsf_ref, *ocsf(ocsf_repo, ocsf_ref))
    print("ecs", ecs_ref, *ecs(ecs_repo, ecs_ref))
