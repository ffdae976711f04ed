"""Scrapes a Prometheus endpoint and parses it with the official python
client's parser (prometheus_client), printing every sample as JSON:
{"name{label=value,...}": value}, labels sorted."""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
out = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out, sort_keys=True))
