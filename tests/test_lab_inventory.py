"""scripts/lab_inventory.py: generated pools keep clear of every address the inventory already names."""

import subprocess
import sys

import yaml

from conftest import REPO

BASE = """
all:
  vars:
    lab_subnet: 10.9.0.0/24
  children:
    haproxy:
      vars:
        lb_vip: 10.9.0.100
      hosts:
        haproxy: {address: 10.9.0.10, incus_name: x-haproxy}
    backend_api_instances:
      hosts:
        backend-api-1: {address: 10.9.0.21, incus_name: x-backend-api-1}
"""


def test_generated_instances_never_take_the_vip(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    out = tmp_path / "hosts-4.yaml"
    subprocess.run([sys.executable, str(REPO / "scripts" / "lab_inventory.py"), "--from", str(tmp_path / "base.yaml"),
                    "--api-instances", "4", "-o", str(out)], check=True, capture_output=True, timeout=60)
    pool = yaml.safe_load(out.read_text())["all"]["children"]["backend_api_instances"]["hosts"]
    assert [h["address"] for h in pool.values()] == ["10.9.0.21", "10.9.0.101", "10.9.0.102", "10.9.0.103"]
    assert [h["incus_name"] for h in pool.values()] == [f"x-backend-api-{n}" for n in range(1, 5)]
