"""Installable anywhere: shipped configs by name, the wheel's contents, and a wheel install.

The fast tests run on the source tree; the wheel is built once per module from a copy of the
files a build reads (so nothing is written into the checkout). The slow test installs that
wheel into a fresh venv outside the repository and runs the CLI from an empty directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from daalml.config import load_config
from daalml.errors import DaalmlError
from daalml.shipped import CONFIG_DIR, resolve_config, shipped_configs
from tests.cli import invoke_fails, invoke_ok

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def test_the_shipped_configs_are_the_repository_configs() -> None:
    assert CONFIG_DIR == REPO / "src" / "daalml" / "configs"
    assert (REPO / "configs").resolve() == CONFIG_DIR  # the top-level folder is a link to it
    assert "glyphs_smallcnn_daal" in SHIPPED and "cub200_vgg19_daal" in SHIPPED


def test_each_shipped_config_has_a_one_line_description() -> None:
    listing = shipped_configs()
    assert list(listing) == SHIPPED
    for name, description in listing.items():
        first = (CONFIG_DIR / f"{name}.yaml").read_text().splitlines()[0]
        assert first == f"# {description}"
        assert 10 <= len(description) <= 100, name


@pytest.mark.parametrize("name", SHIPPED)
def test_a_name_a_repository_path_and_the_file_give_one_config(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # by name from anywhere
    by_name = load_config(name).to_dict()
    assert by_name == load_config(CONFIG_DIR / f"{name}.yaml").to_dict()
    monkeypatch.chdir(REPO)  # the README's configs/NAME.yaml paths
    assert load_config(f"configs/{name}.yaml").to_dict() == by_name


def test_a_real_file_wins_over_a_shipped_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("cub200_vgg19_daal").write_text("data: {dataset: glyphs}\nmodel: {backbone: small_cnn}\n")
    assert resolve_config("cub200_vgg19_daal") == Path("cub200_vgg19_daal")
    assert load_config("cub200_vgg19_daal").data.dataset == "glyphs"


def test_names_overrides_and_missing_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config("cub200_vgg19_daal", ["data.root=/elsewhere", "train.epochs=3"])
    assert (cfg.data.root, cfg.train.epochs, cfg.model.backbone) == ("/elsewhere", 3, "vgg19")
    for missing in ("cub200_vgg19_daal.yaml", "configs/cub200_vgg19_daal"):  # paths, not names
        with pytest.raises(DaalmlError, match=f"^config file not found: {missing}$"):
            load_config(missing)


def test_an_unknown_name_is_one_line_listing_the_shipped_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    output = invoke_fails("train", "cub200_vgg19")
    assert output.count("\n") == 1, output
    assert "config 'cub200_vgg19': no such file and no shipped config of that name" in output
    assert all(name in output for name in SHIPPED)
    assert not Path("runs").exists()
    assert "no shipped config of that name" in invoke_fails("configs", "nope")


def test_configs_lists_names_and_descriptions_and_prints_one() -> None:
    lines = invoke_ok("configs").splitlines()
    listing = shipped_configs()
    assert [line.split()[0] for line in lines] == list(listing)
    for line, (name, description) in zip(lines, listing.items(), strict=True):
        assert line.split(None, 1)[1] == description, name
    text = invoke_ok("configs", "glyphs_smallcnn_daal")
    assert text == (CONFIG_DIR / "glyphs_smallcnn_daal.yaml").read_text()
    assert yaml.safe_load(text)["data"]["dataset"] == "glyphs"


# ---------------------------------------------------------------------------------------------
# The wheel.


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """daalml's wheel, built (no isolation, no download) from a copy of what the build reads."""
    src = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", src / "src", ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "-q", "-w", str(dist), str(src)], check=True, env=_clean_env())
    (built,) = dist.glob("daalml-*.whl")
    return built


def _clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH, so that only the installed daalml is importable."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_wheel_holds_the_package_the_configs_and_the_script(wheel: Path) -> None:
    info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"  # daalml-VERSION.dist-info
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
        shipped = archive.read("daalml/configs/glyphs_smallcnn_daal.yaml").decode()
    configs = sorted(n[len("daalml/configs/") : -5] for n in names if n.endswith(".yaml"))
    assert configs == SHIPPED
    assert shipped == (CONFIG_DIR / "glyphs_smallcnn_daal.yaml").read_text()
    sources = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src").rglob("*.py")}
    assert sources <= names
    assert {"daalml/py.typed", f"{info}/licenses/LICENSE"} <= names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "configs/"))]
    assert "daalml = daalml.cli:main" in entry_points
    assert "Requires-Dist: matplotlib" in metadata  # the demo needs it on a plain install


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies come from this interpreter's site-packages (no torch download); a plain
    # path line, so its .pth files (an editable daalml among them) are not processed.
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    Path(site, "_daalml_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        env=_clean_env(),
    )
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "daalml"), *args],
            cwd=work,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )

    where = subprocess.run(
        [python, "-c", "import daalml; print(daalml.__file__)"],
        cwd=work,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    listing = run("configs")
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[0] for line in listing.stdout.splitlines()] == SHIPPED

    unknown = run("train", "no_such_config")
    assert unknown.returncode == 2 and "shipped: benchmark_cub200_subset_lite0" in unknown.stderr

    demo = run("demo", "--quick", "--output", "demo")
    assert demo.returncode == 0, demo.stderr[-2000:]
    metrics = json.loads((work / "demo" / "metrics.json").read_text())
    assert list(metrics) == ["untrained", "proxy_anchor", "daal"]
    assert metrics["daal"]["recall@1"] > metrics["untrained"]["recall@1"]
    assert (work / "demo" / "tsne.png").stat().st_size > 10_000
    assert "tsne.png" in (work / "demo" / "report.md").read_text()

    overrides = ["train.epochs=1", "data.glyph_max_classes=16", "train.batch_size=32"]
    trained = run("train", "glyphs_smallcnn_daal", *[f"--set={o}" for o in overrides])
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_dir = work / "runs" / "glyphs_smallcnn_daal"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["model"]["backbone"], saved["train"]["epochs"]) == ("small_cnn", 1)
    assert "recall@1" in json.loads((run_dir / "metrics.json").read_text())
