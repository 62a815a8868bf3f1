"""Ansible's community.general xenserver modules against xapid.

A playbook (ansible/vm_lifecycle.yml) deploys a VM from a template,
reconfigures it, walks its power states and removes it, as an operator's
playbook would.  The modules import a module named XenAPI: ansible/XenAPI.py
re-exports Debian's os_xenapi copy (python3-os-xenapi).  Skips when
ansible-playbook or the collection is missing.
"""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PLAYBOOK = os.path.join(HERE, "ansible", "vm_lifecycle.yml")


def _collection_present():
    for base in ("/usr/lib/python3/dist-packages/ansible_collections",
                 os.path.expanduser("~/.ansible/collections/"
                                    "ansible_collections")):
        if os.path.isdir(os.path.join(base, "community", "general")):
            return True
    return False


def test_playbook_walks_a_vm(xapid):
    playbook = shutil.which("ansible-playbook")
    if not playbook:
        pytest.skip("ansible is not installed (apt-get install ansible)")
    if not _collection_present():
        pytest.skip("the community.general collection is not installed")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(HERE, "ansible") + (
        ":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    env["ANSIBLE_LOCALHOST_WARNING"] = "False"
    env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "False"
    env["ANSIBLE_PYTHON_INTERPRETER"] = "/usr/bin/python3"
    url = "http://127.0.0.1:%d" % xapid.port
    r = subprocess.run(
        [playbook, "-i", "localhost,", PLAYBOOK,
         "-e", "xapi_url=%s xapi_password=%s" % (url, xapid.password)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=600)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out[-8000:]
    assert "failed=0" in out
    api = xapid.login()
    assert api.VM.get_by_name_label("ansible-vm") == []
