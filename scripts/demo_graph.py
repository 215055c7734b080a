"""The graph `make demo` runs: workflows/ipadapter_basic.json at demo size."""
import json
import pathlib

from workflow_api import set_widget, to_api

WORKFLOW = pathlib.Path(__file__).resolve().parents[1] / "workflows" / "ipadapter_basic.json"


def prompt(server):
    """(name, API-format prompt) for the demo: the basic workflow at 128x128 and 10 steps (tiny models)."""
    object_info = server.get("/object_info")
    workflow = json.loads(WORKFLOW.read_text())
    for name, value in (("width", 128), ("height", 128)):
        set_widget(workflow, "EmptyLatentImage", name, value, object_info)
    set_widget(workflow, "KSampler", "steps", 10, object_info)
    return f"workflows/{WORKFLOW.name}", to_api(workflow, object_info)
