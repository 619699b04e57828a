#!/usr/bin/env python3
"""Writes operator/prometheusrule.yaml from zonefwd.rules.yml, so prometheus-operator
users get the same rules (the CI check regenerates it and fails on any difference).

    python3 deploy/prometheus/operator/generate.py [OUTPUT]
"""
import pathlib
import sys
import yaml

here = pathlib.Path(__file__).resolve().parent
rules = yaml.safe_load((here.parent / "zonefwd.rules.yml").read_text())
rule = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "zonefwd", "labels": {"app.kubernetes.io/name": "zonefwd"}},
    "spec": {"groups": rules["groups"]},
}
header = (
    "# Generated from ../zonefwd.rules.yml by generate.py: edit that file, then rerun\n"
    "#   python3 deploy/prometheus/operator/generate.py\n"
)
text = header + yaml.safe_dump(rule, sort_keys=False, width=1000)
out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here / "prometheusrule.yaml"
out.write_text(text)
