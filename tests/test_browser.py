"""The example workflows in the real ComfyUI frontend (the one the test host serves), driven in Debian's chromium by
playwright: they load without warnings where the files are, the Missing Models dialog lists every file (the
adapters' included) with its link where they are not, and a workflow runs from the Run button. Written for frontend
1.32 (ComfyUI 0.3.75's pin); also runs on newer frontends (COMFYUI_SRC), which report missing files in a panel."""
import json
import os
import pathlib
import shutil
import sys

import pytest

from comfy_server import ComfyServer
from conftest import COMFYUI_ROOT
from test_workflows import small

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import templates  # noqa: E402

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

# What a load found missing. Frontend 1.32 (ComfyUI 0.3.75's pin) passes it to two app methods that open dialogs: they
# are wrapped to record it (and still show it). Newer frontends keep it in stores that feed their errors panel.
LEGACY_DIALOGS = "() => typeof window.app.showMissingModelsError === 'function'"
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
STORES = "document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia._s"
RESET_STORES = f"""() => {{ const stores = {STORES};
  stores.get('missingNodesError').missingNodesError = null; stores.get('missingModel').missingModelCandidates = null; }}"""
WARNINGS = f"""() => {{
  if (window.__warnings) return window.__warnings;
  const stores = {STORES};
  const nodes = (stores.get('missingNodesError').missingNodesError?.nodeTypes ?? []).map(n => n.type ?? n);
  const models = stores.get('missingModel').missingModelCandidates ?? [];
  return {{nodes: nodes.length ? [nodes] : [], models: models.length ? [models] : []}};
}}"""
# Each loaded node's widgets as the frontend holds them: its serialized values and any combo value not offered.
WIDGETS = """() => window.app.graph.nodes.map(node => ({
  id: node.id, type: node.type, values: node.serialize().widgets_values || [],
  bad_combos: (node.widgets || []).filter(w => w.type === 'combo' && Array.isArray(w.options?.values)
                                               && !w.options.values.includes(w.value)).map(w => [w.name, w.value]),
}))"""
# Missing files with a link: [label "folder / name", link]. 1.32's dialog rows (the link is the name's tooltip), or
# the newer errors panel's entries (it also lists files without a link, by name only).
DIALOG_ROWS = """() => [...document.querySelectorAll('.comfy-missing-models li')].map(row => [
  row.querySelector('span[title]').innerText.trim(), row.querySelector('span[title]').title,
  row.querySelector('.p-message-text')?.innerText ?? ''])"""
PANEL_ROWS = f"""() => ({STORES}.get('missingModel').missingModelCandidates ?? [])
  .filter(c => c.url).map(c => [`${{c.directory}} / ${{c.name}}`, c.url, ''])"""


def legacy(page):
    """Whether the page's frontend reports missing files in load-time dialogs (1.32) rather than an errors panel."""
    return page.evaluate(LEGACY_DIALOGS)


def load_workflow(page, workflow, name):
    """Load a UI workflow as a dropped file would (app.loadGraphData); returns the warnings it raised."""
    page.evaluate(SPY if legacy(page) else RESET_STORES)
    page.evaluate("([wf, name]) => window.app.loadGraphData(wf, true, true, name)", [workflow, name])
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    return page.evaluate(WARNINGS)


def missing_files(page):
    """[label, link, error] of each missing file the frontend shows after a load (closing 1.32's dialog)."""
    if not legacy(page):
        # the panel is filled once the server's folder paths are in
        page.wait_for_function(f"() => {STORES}.get('missingModel').missingModelCandidates?.length > 0")
        return page.evaluate(PANEL_ROWS)
    page.wait_for_selector(".comfy-missing-models")
    rows = page.evaluate(DIALOG_ROWS)
    for button in page.locator(".p-dialog .p-dialog-close-button").all():
        button.click()
    page.wait_for_function("() => !document.querySelector('.p-dialog')")
    return rows


def shown(page, selector):
    return page.evaluate(f"() => [...document.querySelectorAll({json.dumps(selector)})].map(e => e.innerText)")


def open_frontend(browser, server):
    """A page on the server's frontend, ready to load graphs."""
    status, body = server.post("/settings", SETTINGS)
    assert status == 200, body
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.url)
    page.wait_for_function("() => window.app?.graph && window.app.vueAppReady", timeout=60_000)
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
    loaded = {str(node["id"]): node for node in page.evaluate(WIDGETS)}  # newer frontends keep ids as strings
    assert sorted(loaded) == sorted(str(node["id"]) for node in workflow["nodes"])
    for node in workflow["nodes"]:
        held = loaded[str(node["id"])]
        assert held["bad_combos"] == [], f"{node['type']}: values the frontend does not offer"
        # the frontend appends its own widgets (an upload button) after the inputs'
        assert held["values"][:len(node["widgets_values"])] == node["widgets_values"], node["type"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_missing_models_dialog_lists_every_file_with_its_link(path, bare_page):
    workflow = json.loads(path.read_text())
    models = workflow["models"]
    assert {m["directory"] for m in models} & {"ipadapter", "instantid", "pulid"}, "no adapter file listed"
    warnings = load_workflow(bare_page, workflow, path.stem)
    assert warnings["nodes"] == []
    rows = missing_files(bare_page)
    assert {(label, url) for label, url, _ in rows} == {(f"{m['directory']} / {m['name']}", m["url"]) for m in models}
    # 1.32's dialog downloads only .safetensors from Hugging Face / Civitai itself; the rest it still lists, with the
    # link on the name, but a folder it does not know would be a dead end
    assert not [row for row in rows if "Invalid directory" in row[2]]


def test_run_button_renders_an_image(page, comfy_server):
    object_info = comfy_server.get("/object_info")
    path = templates.workflow_path("ipadapter_basic")
    workflow = small(json.loads(path.read_text()), object_info)
    assert load_workflow(page, workflow, path.stem) == {"nodes": [], "models": []}
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


def test_templates_open_as_the_frontend_asks_for_them(page, comfy_server):
    # the template browser puts a name into its URLs unescaped (`<api>/workflow_templates/<pack>/<name>.json`, and
    # `.jpg` for the thumbnail): the browser must fetch each file by its readable name as it stands
    pack, names = next((folder, listed) for folder, listed in comfy_server.get("/workflow_templates").items()
                       if sorted(listed) == templates.workflow_stems())
    opened = page.evaluate("""async ([pack, names]) => Promise.all(names.map(async name => {
      const base = `api/workflow_templates/${pack}/${name}`;
      const workflow = await (await fetch(`${base}.json`)).json();
      const thumbnail = new Image();
      thumbnail.src = `${base}.jpg`;
      await thumbnail.decode();
      return [name, workflow.nodes.length, thumbnail.naturalWidth];
    }))""", [pack, names])
    for name, node_count, width in opened:
        assert node_count == len(json.loads((templates.WORKFLOWS / f"{name}.json").read_text())["nodes"])
        assert width == 512, name
