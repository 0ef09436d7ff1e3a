"""python-tuf's ngclient, for scripts/bench-metadata.sh: refresh and look up one target.

Usage: python ngclient_lookup.py METADATA_DIR BASE_URL ROOT_FILE TARGET_NAME
Bootstraps METADATA_DIR from ROOT_FILE on first use, then refreshes (default fetcher) and
calls get_targetinfo(TARGET_NAME); exits 1 if the target is not found.
"""

import os
import shutil
import sys

from tuf.ngclient import Updater

metadata_dir, base, root, name = sys.argv[1:5]
os.makedirs(metadata_dir, exist_ok=True)
if not os.path.exists(os.path.join(metadata_dir, "root.json")):
    shutil.copy(root, os.path.join(metadata_dir, "root.json"))
# bootstrap=None: trust the root.json already in METADATA_DIR (copied above on first use).
updater = Updater(
    metadata_dir, f"{base}/repo/metadata/", target_base_url=f"{base}/repo/targets/", bootstrap=None
)
updater.refresh()
info = updater.get_targetinfo(name)
if info is None:
    sys.exit(f"ngclient: {name} not found")
print(f"ngclient: found {name} ({info.length} bytes)")
