"""Re-run the tutorials with their full settings and store the outputs (``make tutorials``).

Each notebook is executed in place in a fresh kernel (papermill, the default parameters of its
"parameters" cell) and stamped with the scbranchdiff version that produced its outputs:
``tests/test_tutorials.py`` checks the stamp, so stored outputs never silently come from an
older version. Takes a few minutes per notebook on a laptop CPU.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def settle_streams(notebook: dict) -> None:
    """Keep what a terminal shows at the end: consecutive outputs of one stream are joined and
    each line keeps the text after its last carriage return (progress bars redraw in place;
    stored raw they are thousands of outputs)."""
    for cell in notebook["cells"]:
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                last = outputs[-1] if outputs else None
                if last is not None and last.get("output_type") == "stream" and last["name"] == out["name"]:
                    last["text"] += text
                    continue
                out = {**out, "text": text}
            outputs.append(out)
        for out in outputs:
            if out.get("output_type") == "stream":
                lines = out["text"].split("\n")
                out["text"] = "\n".join(line.rsplit("\r", 1)[-1] for line in lines)
        if "outputs" in cell:
            cell["outputs"] = outputs


def main(names: list[str]) -> None:
    import papermill

    import scbranchdiff

    notebooks = [HERE / f"{n}.ipynb" for n in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in notebooks:
        start = time.perf_counter()
        papermill.execute_notebook(str(path), str(path), cwd=str(HERE), kernel_name="python3")
        notebook = json.loads(path.read_text())
        settle_streams(notebook)
        notebook["metadata"]["scbranchdiff"] = {"version": scbranchdiff.__version__}
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        print(f"{path.name}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
