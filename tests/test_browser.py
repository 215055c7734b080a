"""The example workflows in the real ComfyUI frontend (the one the test host serves), driven in Debian's chromium by
playwright: they load without warnings where the files are, the Missing Models dialog lists every file (the
adapters' included) with its link where they are not, and a workflow runs from the Run button."""
import json
import os
import pathlib
import shutil

import pytest

from comfy_server import ComfyServer
from conftest import COMFYUI_ROOT
from test_workflows import small

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SETTINGS = {"Comfy.TutorialCompleted": True,  # no template browser on first start
            "Comfy.Workflow.ShowMissingModelsWarning": True, "Comfy.Workflow.ShowMissingNodesWarning": True}


def _unavailable(reason):
    if os.environ.get("IPAKIT_REQUIRE_BROWSER"):
        pytest.fail(f"IPAKIT_REQUIRE_BROWSER is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    from playwright.sync_api import sync_playwright
except ImportError:
    _unavailable("playwright is not installed in the host venv: run `make host` (scripts/setup_host.sh)")
if CHROMIUM is None:
    _unavailable("no chromium on PATH: `apt-get install chromium` (make host does it where apt-get is available)")

# Wraps the app's two load-time warnings to record what they were asked to show (they still show it).
SPY = """() => {
  const app = window.app;
  window.__warnings = {nodes: [], models: []};
  if (app.__spied) return;
  const nodes = app.showMissingNodesError.bind(app), models = app.showMissingModelsError.bind(app);
  app.showMissingNodesError = (types) => { window.__warnings.nodes.push(types); return nodes(types); };
  app.showMissingModelsError = (missing, paths) => {
    window.__warnings.models.push(missing);
    return models(missing, paths);
  };
  app.__spied = true;
}"""
# Each loaded node's widgets as the frontend holds them: its serialized values and any combo value not offered.
WIDGETS = """() => window.app.graph.nodes.map(node => ({
  id: node.id, type: node.type, values: node.serialize().widgets_values || [],
  bad_combos: (node.widgets || []).filter(w => w.type === 'combo' && Array.isArray(w.options?.values)
                                               && !w.options.values.includes(w.value)).map(w => [w.name, w.value]),
}))"""
# The Missing Models dialog's rows: [label "folder / name", link (the label's tooltip), error shown on the row].
ROWS = """() => [...document.querySelectorAll('.comfy-missing-models li')].map(row => [
  row.querySelector('span[title]').innerText.trim(), row.querySelector('span[title]').title,
  row.querySelector('.p-message-text')?.innerText ?? ''])"""


def load_workflow(page, workflow, name):
    """Load a UI workflow as a dropped file would (app.loadGraphData); returns the warnings it raised."""
    page.evaluate(SPY)
    page.evaluate("([wf, name]) => window.app.loadGraphData(wf, true, true, name)", [workflow, name])
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    return page.evaluate("() => window.__warnings")


def shown(page, selector):
    return page.evaluate(f"() => [...document.querySelectorAll({json.dumps(selector)})].map(e => e.innerText)")


def close_dialogs(page):
    for button in page.locator(".p-dialog .p-dialog-close-button").all():
        button.click()
    page.wait_for_function("() => !document.querySelector('.p-dialog')")


def open_frontend(browser, server):
    """A page on the server's frontend, ready to load graphs."""
    status, body = server.post("/settings", SETTINGS)
    assert status == 200, body
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.url)
    page.wait_for_function("() => window.app?.graph && window.app.vueAppReady", timeout=60_000)
    page.evaluate(SPY)
    return page


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        # --no-sandbox: chromium's sandbox refuses to start as root (containers, CI)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, comfy_server):
    page = open_frontend(browser, comfy_server)
    yield page
    page.close()


@pytest.fixture(scope="module")
def bare_server(world, tmp_path_factory):
    """A server on the same input images without any model file (a user who has only just installed the pack)."""
    bare = tmp_path_factory.mktemp("bare_world")
    (bare / "input").symlink_to(world / "input")
    (bare / "models").mkdir()
    with ComfyServer(COMFYUI_ROOT, bare, tmp_path_factory.mktemp("bare_comfy")) as server:
        yield server


@pytest.fixture(scope="module")
def bare_page(browser, bare_server):
    page = open_frontend(browser, bare_server)
    yield page
    page.close()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_without_warnings(path, page):
    workflow = json.loads(path.read_text())
    warnings = load_workflow(page, workflow, path.stem)
    assert warnings == {"nodes": [], "models": []}
    assert shown(page, ".p-dialog") == [] and shown(page, ".p-toast-message") == []
    loaded = {node["id"]: node for node in page.evaluate(WIDGETS)}
    assert sorted(loaded) == sorted(node["id"] for node in workflow["nodes"])
    for node in workflow["nodes"]:
        held = loaded[node["id"]]
        assert held["bad_combos"] == [], f"{node['type']}: values the frontend does not offer"
        # the frontend appends its own widgets (an upload button) after the inputs'
        assert held["values"][:len(node["widgets_values"])] == node["widgets_values"], node["type"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_missing_models_dialog_lists_every_file_with_its_link(path, bare_page):
    workflow = json.loads(path.read_text())
    expected = {(f"{m['directory']} / {m['name']}", m["url"]) for m in workflow["models"]}
    assert {m["directory"] for m in workflow["models"]} & {"ipadapter", "instantid", "pulid"}, "no adapter file listed"
    warnings = load_workflow(bare_page, workflow, path.stem)
    assert warnings["nodes"] == []
    bare_page.wait_for_selector(".comfy-missing-models")
    rows = bare_page.evaluate(ROWS)
    close_dialogs(bare_page)
    assert {(label, url) for label, url, _ in rows} == expected
    # the dialog only downloads .safetensors from Hugging Face / Civitai itself; the rest it still lists, with the
    # link on the name, but a folder it does not know would be a dead end
    assert not [row for row in rows if "Invalid directory" in row[2]]


def test_run_button_renders_an_image(page, comfy_server):
    object_info = comfy_server.get("/object_info")
    workflow = small(json.loads((ROOT / "workflows" / "ipadapter_basic.json").read_text()), object_info)
    assert load_workflow(page, workflow, "ipadapter_basic") == {"nodes": [], "models": []}
    save = next(node["id"] for node in workflow["nodes"] if node["type"] == "SaveImage")
    page.get_by_test_id("queue-button").click()
    # the executed message puts the saved image on the node, and the browser has decoded it
    page.wait_for_function(f"() => window.app.graph.getNodeById({save})?.imgs?.[0]?.naturalWidth === 64",
                           timeout=120_000)
    src = page.evaluate(f"() => window.app.graph.getNodeById({save}).imgs[0].src")
    history = comfy_server.get("/history")
    runs = [entry for entry in history.values()
            if any(n["class_type"] == "IPAKitApply" for n in entry["prompt"][2].values())
            and entry["status"]["status_str"] == "success"
            and any(f"filename={img['filename']}" in src for out in entry["outputs"].values()
                    for img in out.get("images", []))]
    assert runs, f"no successful IPAKitApply prompt in /history saved {src}"
    assert all(path.is_file() for path in comfy_server.output_images(runs[-1]))
