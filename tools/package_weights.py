"""Convert the published SonoNet Lasagne weights (.npz) into the safetensors shipped in the package.

    python tools/package_weights.py /path/to/shared/weights/sononet

reads SonoNet16.npz and SmallNet.npz (checked against their published SHA-256), writes
src/crl_uiqa/backbones/weights/{SonoNet16,SmallNet}.safetensors holding the same float32 arrays
under the same names (arr_0, arr_1, ...; no pickle, nothing else changed), and prints the SHA-256
of each written file for crl_uiqa.weights.PACKAGED_WEIGHTS. The LICENSE beside them is the
Apache-2.0 text of the SonoNet-weights repository.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from crl_uiqa.weights import KNOWN_WEIGHTS, PACKAGED_DIR, sha256sum  # noqa: E402


def main(src: str) -> None:
    for name in ("SonoNet16.npz", "SmallNet.npz"):
        npz = Path(src) / name
        got = sha256sum(npz)
        if got != KNOWN_WEIGHTS[name].sha256:
            raise SystemExit(f"{npz}: SHA-256 {got} is not the published {KNOWN_WEIGHTS[name].sha256}")
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: np.ascontiguousarray(data[k]) for k in data.files}
        out = PACKAGED_DIR / name.replace(".npz", ".safetensors")
        # one metadata key (a JSON string): safetensors writes several keys in hash-map order, and
        # the file's bytes must not change from one conversion to the next (its SHA-256 is recorded)
        info = {"format": "lasagne-arrays", "source": KNOWN_WEIGHTS[name].url, "source_sha256": got,
                "licence": KNOWN_WEIGHTS[name].licence}
        save_file(arrays, str(out), metadata={"crl_uiqa": json.dumps(info, sort_keys=True)})
        print(f"{out.name}: {out.stat().st_size} bytes, sha256 {sha256sum(out)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT.parent / "shared" / "weights" / "sononet"))
