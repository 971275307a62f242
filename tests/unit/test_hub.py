"""tagcli.hub: every failure huggingface_hub raises becomes one line of the caller's error class, and base
models and hf:// registries say the same thing about the same failure."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
from huggingface_hub import errors as hf

from tagcli.basemodel.resolve import resolve_model_dir
from tagcli.errors import BaseModelError, PackError
from tagcli.hub import hub_errors
from tagcli.packs.registries import parse_registry

SUBJECT = "registry hf://org/packs: index.json"


def http_error(kind: type[hf.HfHubHTTPError]) -> Callable[[], Exception]:
    # huggingface_hub's HTTP errors read their response's headers; a stand-in with none is enough.
    return lambda: kind("boom", response=SimpleNamespace(headers={}, status_code=404, url="https://hub", request=None))


def connection_error() -> Exception:
    """An error from an HTTP client package that huggingface_hub lets through unwrapped."""
    error = type("ConnectError", (Exception,), {"__module__": "httpcore._exceptions"})
    return error("connection refused")


@pytest.mark.parametrize(
    ("raised", "offline", "message", "hint"),
    [
        (lambda: hf.LocalEntryNotFoundError("x"), True, f"{SUBJECT} is not in the local Hugging Face cache", "online"),
        (lambda: hf.LocalEntryNotFoundError("x"), False, "could not reach the Hugging Face hub for", "network"),
        (lambda: hf.HFValidationError("x"), False, f"{SUBJECT}: not a valid Hugging Face repo id", "repo id"),
        (http_error(hf.GatedRepoError), False, "org/packs is gated on the Hugging Face hub", "hf auth login"),
        (http_error(hf.RepositoryNotFoundError), False, "org/packs was not found on the Hugging Face hub", "repo id"),
        (http_error(hf.RevisionNotFoundError), False, "revision 'v9' of org/packs was not found", "after @"),
        (http_error(hf.RemoteEntryNotFoundError), False, f"{SUBJECT} is not in org/packs", "file name"),
        (http_error(hf.HfHubHTTPError), False, f"could not download {SUBJECT}: boom", "network"),
        (lambda: ConnectionResetError("reset by peer"), False, "could not download", "network"),
        (connection_error, False, f"could not reach the Hugging Face hub for {SUBJECT}: connection refused", "network"),
    ],
)
def test_hub_failures_are_one_line_errors(
    raised: Callable[[], Exception], offline: bool, message: str, hint: str
) -> None:
    with pytest.raises(PackError) as err, hub_errors(PackError, SUBJECT, "org/packs", "v9", offline=offline):
        raise raised()
    assert message in err.value.message and "\n" not in str(err.value)
    assert err.value.hint and hint in err.value.hint


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), hub_errors(PackError, SUBJECT, "org/packs", None, offline=False):
        raise KeyError("a bug, not the hub")


def test_base_models_and_registries_word_an_offline_miss_alike() -> None:
    with pytest.raises(BaseModelError) as model:
        resolve_model_dir("tagcli-test/no-such-model", offline=True)
    with pytest.raises(PackError) as registry:
        parse_registry("hf://tagcli-test/no-such-registry").entries(offline=True)
    for err, subject in [(model, "base model tagcli-test/no-such-model"), (registry, "registry hf://")]:
        assert err.value.message.startswith(subject)
        assert err.value.message.endswith("is not in the local Hugging Face cache and downloads are off")
        assert err.value.hint and err.value.hint.startswith("run once online")
