"""The agent of a scenario: runs its steps in order, in this process (python) or as children it
waits for (exec), and reports each step as one JSON line on an inherited pipe. Standard library
only and no files of its own: everything it opens is what the scenario's steps open, so the
sensor sees exactly the story. A step that raises is reported and the next one runs: an agent
keeps going after a refused call, as a prompt-injected one would.

    python3 agent.py STEPS_JSON REPORT_FD
"""

import json
import os
import subprocess
import sys
import traceback


def run_step(step: dict) -> dict:
    if step.get("python") is not None:
        try:
            exec(compile(step["python"], f"<step {step['name']}>", "exec"), {"__name__": "__step__"})
            return {"ok": True, "detail": ""}
        except BaseException as exc:  # noqa: BLE001 - the scenario decides what a failure means
            return {"ok": False, "detail": "".join(traceback.format_exception_only(type(exc), exc)).strip()}
    try:
        done = subprocess.run(step["exec"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "detail": str(exc)}
    tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-1:] or [""]
    return {"ok": done.returncode == 0, "detail": f"exit {done.returncode}: {tail[0][:200]}"}


def main() -> None:
    steps, report = json.loads(sys.argv[1]), int(sys.argv[2])
    for step in steps:
        os.write(report, (json.dumps({"step": step["name"], "started": True}) + "\n").encode())
        result = run_step(step)
        os.write(report, (json.dumps({"step": step["name"], **result}) + "\n").encode())


if __name__ == "__main__":
    main()
