"""Write the demo's stand-in for the vendor's PPS archive (a small, real docker-save .tar.gz).

`demo_archive.py PATH [IMAGE]`: another image name writes a stand-in for a `docker save` of the agent images
(the OpenShift inventory pushes those with mlops_agent_images_method archive).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures.image_archives import write_docker_archive  # noqa: E402


def main() -> None:
    target = Path(sys.argv[1])
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    image = sys.argv[2] if len(sys.argv) > 2 else "datarobot/datarobot-portable-prediction-api:9.2.0"
    layers = [{"opt/datarobot/README": f"{image} stand-in for the local demo\n".encode()},
              {"opt/datarobot/model/weights.bin": bytes(range(256)) * 4096}]
    write_docker_archive(target, [image], layers, compress=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
