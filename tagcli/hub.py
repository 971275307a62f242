"""Reading from the Hugging Face Hub: when downloads are off, and every hub failure as one line.

Base models (`basemodel/resolve.py`) and hf:// pack registries (`packs/registries.py`) both call
huggingface_hub; `hub_errors` turns what it raises into the caller's own one-line error, so the two
say the same thing about the same failure. huggingface_hub is imported only inside the functions
(pack listings import this module and must start fast).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tagcli.errors import TagcliError, first_line
from tagcli.home import env_true

# Connection errors that huggingface_hub lets through, by the top-level package that raises them.
NETWORK_PACKAGES = {"httpx", "httpx2", "httpcore", "requests", "urllib3"}
UNREACHABLE_HINT = "check the network (and HF_ENDPOINT), or run once online and then use HF_HUB_OFFLINE=1"


def hub_offline(offline: bool = False) -> bool:
    """Whether hub downloads are off: asked for, or set in the environment. huggingface_hub reads
    HF_HUB_OFFLINE once at import; reading it again here lets a later change count."""
    from huggingface_hub import constants

    return offline or env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE") or constants.is_offline_mode()


@contextmanager
def hub_errors(
    error: type[TagcliError],
    subject: str,
    repo_id: str,
    revision: str | None,
    *,
    offline: bool,
    missing_hint: str = "check the file name",
    invalid_hint: str = "a repo id is NAME or ORG/NAME, optionally @REVISION",
    instead: str = "",
) -> Iterator[None]:
    """Raise any hub failure inside the block as one `error` line about `subject` (what was asked for:
    "base model ORG/NAME", "registry hf://ORG/NAME: index.json"), with a hint on what to do about it;
    `instead` is what else a user can do when the hub cannot be read ("pass a local directory")."""
    from huggingface_hub import errors as hf

    also = f", or {instead}" if instead else ""
    not_found = (hf.EntryNotFoundError, getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError))
    try:
        yield
    except hf.LocalEntryNotFoundError:
        # Raised both when downloads are off and when the hub is unreachable; say which.
        if offline:
            raise error(
                f"{subject} is not in the local Hugging Face cache and downloads are off",
                hint=f"run once online (without HF_HUB_OFFLINE / --offline){also}",
            ) from None
        unreachable = f"could not reach the Hugging Face hub for {subject}, and it is not cached"
        raise error(unreachable, hint=UNREACHABLE_HINT + also) from None
    except hf.HFValidationError:
        raise error(f"{subject}: not a valid Hugging Face repo id", hint=invalid_hint) from None
    except hf.GatedRepoError:
        raise error(
            f"{subject}: {repo_id} is gated on the Hugging Face hub",
            hint="accept its terms online and run `hf auth login`",
        ) from None
    except hf.RepositoryNotFoundError:
        raise error(
            f"{subject}: {repo_id} was not found on the Hugging Face hub",
            hint="check the repo id (and log in for a private repo)",
        ) from None
    except hf.RevisionNotFoundError:
        missing_revision = f"{subject}: revision {revision!r} of {repo_id} was not found"
        raise error(missing_revision, hint="check the part after @") from None
    except not_found:
        raise error(f"{subject} is not in {repo_id}", hint=missing_hint) from None
    except (hf.HfHubHTTPError, OSError) as exc:
        raise error(f"could not download {subject}: {first_line(exc)}", hint=UNREACHABLE_HINT + also) from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in NETWORK_PACKAGES:
            raise
        unreachable = f"could not reach the Hugging Face hub for {subject}: {first_line(exc)}"
        raise error(unreachable, hint=UNREACHABLE_HINT + also) from None
