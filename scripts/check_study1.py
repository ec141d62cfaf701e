"""Check reprlab against Janapati & Ji's own code path on their files, through a live server.

    reprlab up   # or any running server + worker
    .venv/bin/python scripts/check_study1.py --data sst2.json --indices icl_indices_5_shot.json \
        --k 5 --n-eval 200 [--model smollm2-135m-instruct] [--model-dir DIR]

It uploads the study's dataset JSON (`{"train": [...], "validation": [...]}` of `{input,
output, combined}`) with the SDK, submits a job (zero-shot and k-shot with `selection: given`
from the published draws), downloads the served activations, rebuilds the study's prompts from
the same files with their code path (`tests/study1_reference.py`: demos' `combined + "\\n\\n"`,
then `input + "\\n"`; HF `output_hidden_states` one prompt at a time, last token) and prints the
max relative error per layer. Ends with one summary line, e.g.
`max_rel_err_k0=1.5e-06 max_rel_err_k5=1.1e-06 layers=31 items=200 pass=1` (pass: <= 1e-4).
Without `--indices`, only zero-shot is checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from study1_reference import relative_error, study_prompts, study_states  # noqa: E402

from reprlab.client import Client  # noqa: E402

TOLERANCE = 1e-4


def _job(upload: str, n_train: int, n_eval: int, k: int, rows: list[list[int]] | None,
         model: str) -> dict:  # fmt: skip
    conditions: list[dict] = [{"name": "zero-shot", "k": 0}]
    if rows is not None:
        conditions.append({"name": f"icl-{k}", "k": k, "selection": "given", "demos": rows})
    return {
        "name": "study-1 check",
        "model": {"name": model, "device": "cpu"},
        "dataset": {
            "source": "file",
            "upload": upload,
            "n_train": n_train,
            "n_eval": n_eval,
            "splits": {"train": "train", "eval": "validation"},
        },  # fmt: skip
        "prompt": {"target_delimiter": "\n"},
        "conditions": conditions,
        "extraction": {"layers": "all"},
        "metrics": [],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the study's dataset JSON")
    ap.add_argument("--indices", type=Path, help="the study's published draws for --k")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    default_dir = Path.home() / ".cache/reprlab/models/smollm2-135m-instruct"
    ap.add_argument("--model-dir", type=Path, default=default_dir)
    args = ap.parse_args()

    data = json.loads(args.data.read_text())
    rows = None
    if args.indices is not None:
        draws = json.loads(args.indices.read_text())
        rows = [draws[str(i)] for i in range(args.n_eval)]
    with Client() as client:
        upload = client.datasets.upload(args.data)
        spec = _job(upload.id, len(data["train"]), args.n_eval, args.k, rows, args.model)
        job = client.jobs.create(spec)
        client.jobs.wait(job.id)
        served = {c.name: client.jobs.activations(job.id, c.name) for c in
                  client.jobs.results(job.id).conditions}  # fmt: skip

    summary = {}
    for name, indices in (("zero-shot", None), (f"icl-{args.k}", args.indices)):
        if name not in served:
            continue
        layers = served[name]
        ours = np.stack([layers[i] for i in sorted(layers)], axis=1).astype(np.float64)
        theirs = study_states(args.model_dir, study_prompts(args.data, indices, args.n_eval))
        err = relative_error(ours, theirs)
        print(f"{name}: max relative error per layer", np.array2string(err, precision=2))
        summary[f"max_rel_err_k{0 if indices is None else args.k}"] = float(err.max())
    ok = all(v <= TOLERANCE for v in summary.values())
    fields = " ".join(f"{k}={v:.2e}" for k, v in summary.items())
    print(f"{fields} layers={ours.shape[1]} items={ours.shape[0]} pass={int(ok)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
