"""Registry metadata (checked by comfy-cli's own parser), requirements.txt, template thumbnails and titles."""
import json
import re
import subprocess
import sys
import tomllib
import urllib.parse
import urllib.request

import pytest
from PIL import Image

import host_env

ROOT = host_env.ROOT
sys.path.insert(0, str(ROOT / "scripts"))
import render_images  # noqa: E402
import templates  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NAME = PYPROJECT["project"]["name"]
# a template's title is its file name: two digits, then letters, digits, spaces and . ( ) - only. The frontend puts
# it in URLs unescaped (a browser escapes spaces, not # ? % & +) and Windows refuses : / \ ? * " < > |
SAFE_TITLE = re.compile(r"^\d\d [A-Za-z0-9][A-Za-z0-9 .()-]*[A-Za-z0-9)]$")
# the registry's rules for a node id (docs.comfy.org/registry/specifications): under 100 characters, letters,
# digits, '-', '_', '.', no two special characters in a row, starting with a letter
REGISTRY_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*$")
# what the parser returns, with the warnings it printed, run in comfy-cli's own venv (see scripts/setup_host.sh)
PARSE = """
import contextlib, dataclasses, io, json, sys
from comfy_cli.registry import config_parser

def plain(value):
    if dataclasses.is_dataclass(value):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value) if isinstance(value, str) else value

out = io.StringIO()
with contextlib.redirect_stdout(out):
    config = config_parser.extract_node_configuration(sys.argv[1])
    name = config.project.name
    normalized, sanitized = config_parser.normalize_project_name(name), config_parser.sanitize_node_name(name)
print(json.dumps({"config": plain(config), "printed": out.getvalue(),
                  "normalized": normalized, "sanitized": sanitized}))
"""


@pytest.fixture(scope="module")
def comfy_cli_python():
    python = host_env.setting("COMFY_CLI_PYTHON")
    assert python, f"no COMFY_CLI_PYTHON in {host_env.host_env_path()}: run `make host` (installs comfy-cli)"
    return python


@pytest.fixture(scope="module")
def registry_config(comfy_cli_python):
    done = subprocess.run([comfy_cli_python, "-c", PARSE, str(ROOT / "pyproject.toml")], capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def test_comfy_cli_parses_pyproject_without_warnings(registry_config):
    assert registry_config["printed"] == ""
    config = registry_config["config"]
    assert config["project"]["name"] == NAME
    assert config["project"]["supported_comfyui_version"] == PYPROJECT["tool"]["comfy"]["requires-comfyui"]
    assert config["project"]["license"]["file"] == "LICENSE" and (ROOT / "LICENSE").is_file()


def test_registry_name_is_valid_and_kept_by_comfy_cli(registry_config):
    assert REGISTRY_NAME.match(NAME) and len(NAME) < 100
    assert "comfyui" not in NAME.lower()
    assert registry_config["normalized"] == NAME
    assert registry_config["sanitized"] == NAME


def test_version_is_semver(registry_config):
    assert re.fullmatch(r"\d+\.\d+\.\d+", registry_config["config"]["project"]["version"])


def test_repository_publisher_and_display_name(registry_config):
    comfy = registry_config["config"]["tool_comfy"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", registry_config["config"]["project"]["urls"]["repository"])
    assert REGISTRY_NAME.match(comfy["publisher_id"])
    assert comfy["display_name"] == "IPAdapter Kit"


def test_icon_is_a_square_image_of_this_repository(registry_config):
    repository = registry_config["config"]["project"]["urls"]["repository"]
    owner_repo = repository.removeprefix("https://github.com/")
    icon = registry_config["config"]["tool_comfy"]["icon"]
    match = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(owner_repo)}/main/(.+\.png)", icon)
    assert match, f"icon {icon!r} is not a raw URL of {repository}"
    with Image.open(ROOT / match.group(1)) as picture:
        assert picture.format == "PNG"
        assert picture.size[0] == picture.size[1] and 128 <= picture.size[0] <= 400


def test_comfy_node_validate_passes(comfy_cli_python):
    done = subprocess.run([comfy_cli_python, "-m", "comfy_cli", "--skip-prompt", "--no-enable-telemetry", "node",
                           "validate"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    said = done.stdout + done.stderr  # rich writes its verdict to stderr when not on a terminal
    assert done.returncode == 0, said
    assert "All validation checks passed" in said, said
    assert "warning" not in said.lower(), said


def test_registry_archive_holds_the_pack_and_leaves_out_the_tests(comfy_cli_python, tmp_path):
    archive = tmp_path / "node.zip"
    pack = ("import sys; from comfy_cli import file_utils; file_utils.zip_files(sys.argv[1]); "
            "import zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))")
    done = subprocess.run([comfy_cli_python, "-c", pack, str(archive)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    names = set(done.stdout.splitlines())
    for needed in ("__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md",
                   "docs/images/icon.png", "docs/images/basic_graph.png", "nodes/loaders.py",
                   "ipadapter_core/errors.py", "migrate/__main__.py", "locales/en/main.json"):
        assert needed in names, needed
    for stem in templates.workflow_stems():
        assert {f"workflows/{stem}.json", f"workflows/{stem}.jpg"} <= names, stem
    assert not [n for n in names if n.startswith(("tests/", ".ci/"))]


def test_workflow_cnr_ids_name_the_registry_entry():
    for path in templates.WORKFLOWS.glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            cnr_id = node.get("properties", {}).get("cnr_id")
            if cnr_id is not None:
                expected = NAME if node["type"].startswith("IPAKit") else "comfy-core"
                assert cnr_id == expected, f"{path.name} node {node['id']} ({node['type']})"


def requirement_names(text):
    """The distribution names a requirements file installs (comments and options left out)."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_requirement_names_parser():
    text = "# insightface\ntorch>=2\nonnxruntime-gpu ; sys_platform == 'linux'\nFoo_Bar[x]==1\n-r other.txt\n"
    assert requirement_names(text) == ["torch", "onnxruntime-gpu", "foo-bar"]


def test_requirements_install_nothing_comfyui_pins():
    ours = set(requirement_names((ROOT / "requirements.txt").read_text()))
    comfy = set(requirement_names((host_env.comfy_root() / "requirements.txt").read_text()))
    assert comfy, "the host's ComfyUI requirements.txt lists nothing"
    assert not ours & (comfy | {"torch", "torchvision", "torchaudio", "xformers"})


def test_host_requirements_leave_the_frontend_to_comfyui():
    # ComfyUI's own requirements.txt pins its frontend; a second pin here would break a newer host (COMFYUI_SRC)
    names = requirement_names((ROOT / "scripts" / "host-requirements.txt").read_text())
    assert names and not [n for n in names if n.startswith("comfyui-")]


def test_requirements_name_the_face_extras():
    text = (ROOT / "requirements.txt").read_text()
    extras = PYPROJECT["project"]["optional-dependencies"]["faceid"]
    for package in ("insightface", "onnxruntime", "onnxruntime-gpu"):
        assert re.search(rf"#.*\b{package}\b", text), package
    for requirement in extras:
        assert requirement_names(requirement)[0] in text


def test_every_graph_is_a_template_titled_by_its_file_name():
    import workflow_graphs

    keys = [key for key, _title, _description in templates.TEMPLATES]
    titles = [title for _key, title, _description in templates.TEMPLATES]
    assert sorted(keys) == sorted(workflow_graphs.WORKFLOWS) and keys[0] == "ipadapter_basic"
    # both frontends show a pack's template with its file stem as the title (and as the description)
    assert [templates.workflow_path(key).stem for key in keys] == titles
    assert sorted(titles) == templates.workflow_stems()
    assert not [title for title in titles if not SAFE_TITLE.match(title)]
    # numbered in this order, so sorting by title (A-Z in either frontend) lists basic first and the rest as here
    assert [int(title[:2]) for title in titles] == list(range(1, len(titles) + 1))
    for _key, title, description in templates.TEMPLATES:
        assert description
        with Image.open(templates.thumbnail_path(title)) as picture:
            assert picture.format == "JPEG" and picture.size == (512, 512)


def test_readme_lists_the_templates_in_order():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Example workflows"):readme.index("## Troubleshooting")]
    positions = [section.index(f"| {title} | {description} |") for _key, title, description in templates.TEMPLATES]
    assert positions == sorted(positions)


def test_readme_download_table_has_every_file_the_unified_loader_asks_for():
    from ipadapter_kit.nodes import presets

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Model files"):readme.index("## Example workflows")].lower()
    for arches in presets.PRESETS.values():
        for patterns, encoder in arches.values():
            assert f"`{presets.release_name(patterns[0], '').lower()}." in table, patterns[0]
            assert f"`{presets.ENCODERS[encoder][1].lower()}`" in table, encoder


def test_no_json_but_the_workflows_in_the_templates_folder():
    # ComfyUI lists every *.json there as a template: an index or metadata file would show up as one
    for path in templates.WORKFLOWS.glob("*.json"):
        assert "nodes" in json.loads(path.read_text()), path.name


@pytest.mark.parametrize("key,title,description", templates.TEMPLATES, ids=[t[0] for t in templates.TEMPLATES])
def test_thumbnails_show_the_current_workflow(key, title, description):
    workflow = json.loads(templates.workflow_path(key).read_text())
    with Image.open(templates.thumbnail_path(title)) as stored:
        drawn_from = stored.info.get("comment", b"").decode()
    assert drawn_from == render_images.signature(workflow, title, description), \
        f"workflows/{title}.jpg was drawn from another graph, title or script: run scripts/render_images.py"


def test_thumbnail_signature_sees_what_is_drawn():
    key, title, description = templates.TEMPLATES[0]
    workflow = json.loads(templates.workflow_path(key).read_text())
    before = render_images.signature(workflow, title, description)
    assert render_images.signature(workflow, title + "!", description) != before
    workflow["nodes"][0]["widgets_values"] = ["another.safetensors"]
    assert render_images.signature(workflow, title, description) != before
    workflow["nodes"][0]["widgets_values"] = None
    workflow["nodes"][0]["properties"] = {"cnr_id": NAME}  # not drawn: no new picture needed
    workflow_without = {**workflow, "nodes": [{**workflow["nodes"][0], "properties": {}}] + workflow["nodes"][1:]}
    assert render_images.signature(workflow, title, description) == \
        render_images.signature(workflow_without, title, description)


def test_render_layout_follows_the_links():
    workflow = {"nodes": [{"id": i, "type": "X", "pos": [0, i], "inputs": [], "outputs": []} for i in (1, 2, 3)],
                "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 1, 0, 3, 1, "MODEL"]]}
    assert render_images.columns_by_depth(workflow) == {1: 0, 2: 1, 3: 2}
    slim = render_images.without(workflow, set())
    assert slim["links"] == [[0, 1, 0, 2, 0, "MODEL"], [1, 2, 0, 3, 0, "MODEL"], [2, 1, 0, 3, 1, "MODEL"]]
    workflow["nodes"][1]["type"] = "Hidden"
    joined = render_images.without(workflow, {"Hidden"})
    assert [n["id"] for n in joined["nodes"]] == [1, 3]
    assert sorted(tuple(link[1:5]) for link in joined["links"]) == [(1, 0, 3, 0), (1, 0, 3, 1)]


def test_server_gives_the_templates_group_a_readable_name(comfy_server):
    # the frontend labels a pack's template group with templateWorkflows.category.<folder> when a pack's locales
    # define it (merged from /i18n), else with the folder name
    categories = comfy_server.get("/i18n")["en"]["templateWorkflows"]["category"]
    assert categories[NAME] == "IPAdapter Kit"


def test_server_serves_each_thumbnail_next_to_its_workflow(comfy_server):
    listed = comfy_server.get("/workflow_templates")
    assert sorted(listed["ipadapter-kit"]) == templates.workflow_stems()
    for stem in templates.workflow_stems():
        # escaped as a browser escapes the frontend's unescaped URL (spaces; parentheses stay)
        url = f"{comfy_server.url}/api/workflow_templates/ipadapter-kit/{urllib.parse.quote(stem, safe='()')}.jpg"
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.status == 200 and reply.read(3) == b"\xff\xd8\xff"
