import os
import tempfile

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# generated data is cached by its settings (eval/prepare.py): one fresh cache per test session, never the user's
os.environ["MODALITY_ALIGN_CACHE"] = tempfile.mkdtemp(prefix="modality-align-test-cache-")

import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from tests.fixtures import tiny_dataset
    return tiny_dataset(tmp_path_factory.mktemp("data") / "colors")


def _families():
    from eval.models import supported_families
    return supported_families()


# every registered family: the contract tests (tests/test_models_scoring.py) run once per family
@pytest.fixture(scope="session", params=_families())
def tiny_model(request, tmp_path_factory):
    from tests.fixtures import tiny_model_dir
    # "light" makes multi-token answers sharing a first token (light blue / light green) writable
    return tiny_model_dir(request.param, tmp_path_factory.mktemp(request.param) / "model", extra_words=["light", "car"])


@pytest.fixture(scope="session")
def answering_data(tmp_path_factory):
    """Enough groups that a random model answering with colours leaves 20+ text- or vision-following conflicts."""
    from tests.fixtures import tiny_dataset
    return tiny_dataset(tmp_path_factory.mktemp("answering") / "colors", groups=24)
