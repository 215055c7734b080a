"""The graph `make demo` runs: the basic example workflow (the first template) at demo size."""
import json

import templates
from workflow_api import set_widget, to_api

WORKFLOW = templates.workflow_path("ipadapter_basic")


def prompt(server):
    """(name, API-format prompt) for the demo: the basic workflow at 128x128 and 10 steps (tiny models)."""
    object_info = server.get("/object_info")
    workflow = json.loads(WORKFLOW.read_text())
    for name, value in (("width", 128), ("height", 128)):
        set_widget(workflow, "EmptyLatentImage", name, value, object_info)
    set_widget(workflow, "KSampler", "steps", 10, object_info)
    return f"workflows/{WORKFLOW.name}", to_api(workflow, object_info)
