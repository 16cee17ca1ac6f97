"""The CI recipe (docs/github-actions.yml) is a valid workflow that installs, runs the gates with
JUnit XML and the report, and uploads both; its commands are the README's, and the README shows
it as it is. Each planted fault below is caught."""

import re
from pathlib import Path

import pytest
import yaml  # the test extra installs PyYAML

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "docs" / "github-actions.yml"
README = ROOT / "README.md"


def _section(readme: str, title: str) -> str:
    return readme.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _bash_lines(text: str) -> list[str]:
    return [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for line in block.splitlines()]


def recipe_problems(workflow_text: str, readme: str) -> list[str]:
    """What is wrong with the recipe, as one line each (empty: nothing)."""
    workflow = yaml.safe_load(workflow_text)
    problems = []
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on"
    if not workflow.get("on", workflow.get(True)):
        problems.append("no trigger (`on:`)")
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    commands = [s["run"] for s in steps if "run" in s]
    if len(commands) != 2:
        return problems + [f"expected two commands (install, gates), found {commands}"]
    install, gates = commands
    if install not in _bash_lines(_section(readme, "Quick start")):
        problems.append(f"the install command {install!r} is not the quick start's")
    for flag in ("--prune-model=", "--junitxml=", "--prune-report="):
        if flag not in gates:
            problems.append(f"the gate command lacks {flag}")
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    if not uploads:
        return problems + ["nothing is uploaded"]
    upload = uploads[0]
    if upload.get("if") != "always()":
        problems.append("the upload is skipped when a gate fails (needs `if: always()`)")
    paths = upload.get("with", {}).get("path", "").split()
    for flag in ("--prune-report=", "--junitxml="):
        found = re.search(f"{flag}(\\S+)", gates)
        if found and not {found.group(1), found.group(1) + "/"} & set(paths):
            problems.append(f"{found.group(1)} is written but not uploaded")
    if steps.index(upload) < commands.index(gates) + 1:
        problems.append("the upload runs before the gates")
    ci = _section(readme, "In CI")
    if re.findall(r"```yaml\n(.*?)```", ci, flags=re.S) != [workflow_text]:
        problems.append("the README's CI section does not show the workflow as it is")
    if _bash_lines(ci) != commands:
        problems.append("the README's CI section lists other commands")
    return problems


def test_the_recipe_is_valid_and_its_commands_are_the_readmes():
    assert recipe_problems(WORKFLOW.read_text(), README.read_text()) == []


@pytest.mark.parametrize("old, new, problem", [
    ("        if: always()\n", "", "skipped when a gate fails"),
    (" --prune-report=prune-report", "", "lacks --prune-report="),
    ("            prune-junit.xml\n", "", "prune-junit.xml is written but not uploaded"),
    ('pip install -e ".[test]"', "pip install -e .", "not the quick start's"),
])
def test_a_planted_fault_is_caught(old, new, problem):
    workflow, readme = WORKFLOW.read_text(), README.read_text()
    assert old in workflow
    broken = workflow.replace(old, new)
    problems = recipe_problems(broken, readme.replace(workflow, broken))  # the README shows the broken one
    assert any(problem in p for p in problems), problems


def test_a_readme_out_of_step_with_the_workflow_is_caught():
    workflow, readme = WORKFLOW.read_text(), README.read_text()
    stale = readme.replace(workflow, workflow.replace("actions/checkout@v4", "actions/checkout@v3"))
    assert "does not show the workflow as it is" in " ".join(recipe_problems(workflow, stale))
