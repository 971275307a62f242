"""A pack's model card: what it predicts, from what, how it was trained and how well it does, as Markdown.

`model_card` is a pure function of a pack's manifest fields (`vars(manifest)`, `listing.pack_info`'s
record, or a registry's index entry, which lacks the training record): `tagcli pack info` renders it
for people and `tagcli pack export` writes it next to the archive (`NAME-VERSION.md`). Everything
said is derived from the manifest; nothing is looked up, so the card of a pack is the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tagcli.atomic import SHARED, write_text_atomic
from tagcli.basemodel.resolve import short_fingerprint
from tagcli.core.heads import HEADS, head_from_spec
from tagcli.core.heads.base import card_number
from tagcli.core.readout import POOLS
from tagcli.errors import PackError
from tagcli.packs.reference import percentile_column

CARD_SUFFIX = ".md"  # `pack export` writes DIR/NAME-VERSION.md beside DIR/NAME-VERSION.tagpack

# Split metrics that count rows or name the data rather than measure the model.
BOOKKEEPING = ("n", "rows", "scored", "unlabeled", "invalid", "error", "data", "targets", "device", "dtype")
# Metric columns in this order (lower is better for the last ones); others follow alphabetically.
METRIC_ORDER = (
    "pearson",
    "spearman",
    "accuracy",
    "roc_auc",
    "exact_match",
    "char_error_rate",
    "mse",
    "mae",
    "standardized_mse",
    "log_loss",
    "loss",
    "perplexity",
)
PER_TARGET = ("pearson", "spearman", "mse", "mae")
# Metrics in the target's own units: averaged over targets of different units they mean nothing.
UNIT_METRICS = ("mse", "mae")
COLUMN_FLAGS = ("smiles", "protein")  # input kinds with their own `--KIND-col` option of `tagcli predict`
WEAK_PEARSON = 0.3


def model_card(about: Mapping[str, Any]) -> str:
    """The Markdown model card of a pack described by `about` (manifest fields; unknown keys are ignored)."""
    name, kind = str(about.get("name", "?")), about.get("kind")
    title = f"{name} {about.get('version') or ''}".strip()
    lines = [f"# {title}", "", _text(about.get("description")) or "(no description)", ""]
    if kind == "domain":
        lines += [f"A **domain pack** (method {about.get('method', 'tag-llm')}): a tag, not a predictor.", ""]
    else:
        lines += [f"A **function pack** trained with the {about.get('method', 'tag-llm')} method.", ""]
    sections = (
        ("Task", _task),
        ("Inputs", _inputs),
        ("Base model", _base_model),
        ("Training data", _training),
        ("Metrics", _metrics),
        ("Reference set", _reference),
        ("Intended use and limits", _limits),
        ("How to use", _usage),
    )
    for heading, build in sections:
        body = build(about)
        if body:
            lines += [f"## {heading}", "", *body, ""]
    text = "\n".join(lines).rstrip() + "\n"
    while "\n\n\n" in text:  # sections join with blank lines; never two in a row
        text = text.replace("\n\n\n", "\n\n")
    return text


def write_card(path: str | Path, about: Mapping[str, Any]) -> Path:
    """Write the model card of `about` to `path` atomically (temp file + rename), world-readable."""
    return write_text_atomic(path, model_card(about), mode=SHARED)


def output_columns(about: Mapping[str, Any]) -> list[str]:
    """The columns the pack adds to a scored file: an index entry lists them, a manifest's head spec implies them."""
    if isinstance(about.get("outputs"), list):
        return [str(c) for c in about["outputs"]]
    spec, hidden = about.get("head"), about.get("hidden_size")
    if not isinstance(spec, dict) or not isinstance(hidden, int):
        return []
    reference = about.get("reference") if isinstance(about.get("reference"), dict) else {}
    ranked = list(reference.get("values") or {}) if isinstance(reference.get("values"), dict) else []
    try:
        return head_from_spec(spec, hidden).output_columns() + [percentile_column(c) for c in ranked]
    except (PackError, ValueError, TypeError, KeyError):
        return []


# --------------------------------------------------------------------------- sections


def _task(about: Mapping[str, Any]) -> list[str]:
    if about.get("kind") == "domain":
        spec = about.get("input") if isinstance(about.get("input"), dict) else {}
        input_kind = spec.get("kind", about.get("name"))
        lines = [
            f"- **Domain:** `{about.get('name')}` inputs of kind {input_kind}",
            f"- **Function:** marks where a {input_kind} input begins in the prompts of the function packs "
            "trained with this domain; it predicts nothing by itself",
        ]
        if spec:
            canon = "yes" if spec.get("canonicalize") else "no"
            lines.append(f"- **Input limits:** at most {spec.get('max_tokens')} tokens; canonicalized: {canon}")
        return lines
    spec = about.get("head") if isinstance(about.get("head"), dict) else None
    lines = [f"- **Predicts:** {_predicts(spec, _readout(about))}"] if spec else []
    outputs = output_columns(about)
    if outputs:
        lines.append(f"- **Output columns:** {_codes(outputs)} (plus `status` and `error` per row)")
    name, method = str(about.get("method", "tag-llm")), _method(about)
    lines.append(f"- **Method:** {name}" + (f": {method.about}" if method is not None else ""))
    return lines


def _method(about: Mapping[str, Any]) -> Any:
    """The training method the pack names, when this tagcli knows it (its words go on the card)."""
    from tagcli.train.methods import METHODS  # training's registry; imported only when a card is drawn

    return METHODS.get(str(about.get("method", "tag-llm")))


def _readout(about: Mapping[str, Any]) -> str:
    """What a readout head reads: the pools and layers of its readout spec (the paper's by default)."""
    head = about.get("head") if isinstance(about.get("head"), dict) else {}
    readout = head.get("readout") if isinstance(head.get("readout"), dict) else {}
    names = [str(p) for p in readout.get("pools") or ["tag-last"]]
    pools = [POOLS[p].words if p in POOLS else p for p in names]
    layers = [str(k) for k in readout.get("layers") or []]
    template = str(about.get("template") or "")
    if names == ["tag-last"] and not template.rstrip().endswith(f"{{tag:{about.get('name')}}}"):
        pools = ["the last prompt position"]
    where = f"decoder layers {', '.join(layers)} (concatenated)" if layers else "the final layer"
    return f"the base model's hidden states ({'; '.join(pools)}) at {where}"


def _predicts(spec: Mapping[str, Any], readout: str) -> str:
    kind = HEADS.get(str(spec.get("type")))
    return kind.card_predicts(spec, readout) if kind is not None else f"a {spec.get('type')} head's outputs"


def _inputs(about: Mapping[str, Any]) -> list[str]:
    if about.get("kind") == "domain":
        return []
    lines = []
    domains = [str(d) for d in about.get("domains") or []]
    if domains:
        lines.append(f"- **Domains, in template order:** {', '.join(domains)}")
    if about.get("template"):
        lines.append(f"- **Prompt template:** `{about['template']}`")
    requires = about.get("requires") if isinstance(about.get("requires"), dict) else {}
    if requires:
        needed = [
            f"{domain} {r.get('version', '?')} (tag {short_fingerprint(r.get('sha256'))})"
            for domain, r in requires.items()
        ]
        lines.append(f"- **Domain packs it needs:** {'; '.join(needed)}")
    return lines


def _base_model(about: Mapping[str, Any]) -> list[str]:
    base = about.get("base_model") if isinstance(about.get("base_model"), dict) else {}
    lines = [
        f"- **Model:** {base.get('id', '?')}",
        f"- **Fingerprint:** `{short_fingerprint(base.get('fingerprint'))}` (tagcli refuses any other model)",
    ]
    if isinstance(about.get("hidden_size"), int) and isinstance(about.get("tag_length"), int):
        lines.append(f"- **Hidden size:** {about['hidden_size']}; **tag length:** {about['tag_length']} tokens")
    return lines


def _training(about: Mapping[str, Any]) -> list[str]:
    training = about.get("training") if isinstance(about.get("training"), dict) else {}
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    lines = []
    if data.get("train"):
        by_split = data.get("dropped") if isinstance(data.get("dropped"), dict) else None
        dropped = data.get("dropped_rows")
        if by_split is not None:
            dropped_text = _dropped(by_split.get("train"))
        else:  # packs from before reasons were recorded: one count over both splits
            dropped_text = f"; {dropped} dropped as invalid" if isinstance(dropped, int) else ""
        lines.append(f"- **Train:** `{data['train']}`{_rows(data.get('train_rows'))} used{dropped_text}")
    if data.get("val"):
        by_split = data.get("dropped") if isinstance(data.get("dropped"), dict) else {}
        lines.append(
            f"- **Validation:** `{data['val']}`{_rows(data.get('val_rows'))} used{_dropped(by_split.get('val'))}"
        )
    if data.get("targets"):
        lines.append(f"- **Targets:** {', '.join(str(t) for t in data['targets'])}")
    run = []
    if training.get("stage") is not None:
        run.append(f"stage {training['stage']}")
    hyper = training.get("hyperparameters") if isinstance(training.get("hyperparameters"), dict) else {}
    method = hyper.get("method") or about.get("method")
    if method and training:
        run.append(f"method {method}")
    if training.get("steps") is not None:
        best = f" (best at step {training['best_step']})" if training.get("best_step") is not None else ""
        run.append(f"{training['steps']} steps{best}")
    if isinstance(training.get("seconds"), (int, float)):
        run.append(f"{training['seconds']:.0f} s")
    where = " in ".join(str(training[k]) for k in ("device", "dtype") if training.get(k))
    if where:
        run.append(f"on {where}")
    if training.get("seed") is not None:
        run.append(f"seed {training['seed']}")
    if run:
        lines.append(f"- **Run:** {', '.join(run)}")
    if hyper:
        keys = ("batch_size", "lr", "head_lr", "max_steps", "epochs")
        shown = ", ".join(f"{k} {card_number(hyper[k])}" for k in keys if hyper.get(k) is not None)
        if shown:
            lines.append(f"- **Hyperparameters:** {shown}")
        lines += _option_lines(about, hyper)
    return lines


def _option_lines(about: Mapping[str, Any], hyper: Mapping[str, Any]) -> list[str]:
    """The head kind's and the method's own options as the pack recorded them, each in its kind's words
    (a domain pack has neither: older ones recorded head options all the same)."""
    if about.get("kind") == "domain":
        return []
    spec = about.get("head") if isinstance(about.get("head"), dict) else {}
    head, method = HEADS.get(str(spec.get("type"))), _method(about)
    lines = [
        head.Options.card_line(hyper, f"{head.type_name} head") if head is not None else None,
        method.Options.card_line(hyper, f"{method.name} method") if method is not None else None,
    ]
    return [line for line in lines if line]


def _metrics(about: Mapping[str, Any]) -> list[str]:
    metrics = about.get("metrics") if isinstance(about.get("metrics"), dict) else {}
    splits = {s: m for s, m in metrics.items() if isinstance(m, dict)}
    if not splits:
        return ["No metrics were recorded."]
    names = _metric_names(splits.values())
    targets = max((len(m["targets"]) for m in splits.values() if isinstance(m.get("targets"), dict)), default=0)
    lines = []
    if targets > 1:
        names = [k for k in names if k not in UNIT_METRICS]  # those are per target, below
        lines += [f"Means over the {targets} targets of the unit-free metrics; each target's own are below.", ""]
    if names:
        lines += [
            "| metric | " + " | ".join(_cell(s) for s in splits) + " |",
            "|---|" + "---:|" * len(splits),
            "| rows | " + " | ".join(str(m.get("n", "")) for m in splits.values()) + " |",
        ]
        lines += [f"| {_cell(k)} | " + " | ".join(card_number(m.get(k)) for m in splits.values()) + " |" for k in names]
        lines.append("")
    for split, m in splits.items():
        source = m.get("data")
        if source or "scored" in m:
            counted = f"{m['scored']} of {m.get('rows')} rows scored" if "scored" in m else ""
            failed = ", ".join(f"{m[k]} {k}" for k in ("invalid", "error") if m.get(k))
            numerics = " in ".join(str(m[k]) for k in ("device", "dtype") if m.get(k))
            detail = "; ".join(x for x in (counted, failed, f"measured on {numerics}" if numerics else "") if x)
            lines.append(f"- **{split}:** " + (f"`{source}`" if source else "") + (f" ({detail})" if detail else ""))
    for split, m in splits.items():
        targets = m.get("targets") if isinstance(m.get("targets"), dict) else {}
        if len(targets) > 1:
            lines += ["", f"Per target, {split} split:", ""]
            lines += ["| target | " + " | ".join(PER_TARGET) + " |", "|---|" + "---:|" * len(PER_TARGET)]
            for target, tm in targets.items():
                lines.append(f"| {_cell(target)} | " + " | ".join(card_number(tm.get(k)) for k in PER_TARGET) + " |")
    return lines


def _reference(about: Mapping[str, Any]) -> list[str]:
    reference = about.get("reference")
    if not isinstance(reference, dict) or not isinstance(reference.get("values"), dict):
        return []
    columns = ", ".join(f"`{c}_percentile`" for c in reference["values"])
    return [
        f"`tagcli predict` adds {columns}: where a row's prediction falls (0-100, mid-rank) among this "
        f"pack's predictions for **{_text(reference.get('name'))}** ({_text(reference.get('rows'))} "
        f"scored rows; {_text(reference.get('source'))}). The set is for percentiles only, never training data; "
        "`--no-percentiles` leaves the columns out."
    ]


def _metric_names(splits: Sequence[Mapping[str, Any]] | Any) -> list[str]:
    present = {k for m in splits for k, v in m.items() if k not in BOOKKEEPING and isinstance(v, (int, float))}
    return [k for k in METRIC_ORDER if k in present] + sorted(present - set(METRIC_ORDER))


def _limits(about: Mapping[str, Any]) -> list[str]:
    training = about.get("training") if isinstance(about.get("training"), dict) else {}
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    name = about.get("name")
    lines = []
    description = _text(about.get("description"))
    if about.get("kind") == "domain":
        lines.append(
            f"- Use it through function packs trained with the `{name}` domain"
            + (f" ({description})" if description else "")
            + "; on its own it only shapes how the base model reads these inputs."
        )
    else:
        domains = ", ".join(str(d) for d in about.get("domains") or []) or "its"
        lines.append(f"- Intended for scoring {domains} inputs" + (f": {description}." if description else "."))
    spec = about.get("head") if isinstance(about.get("head"), dict) else {}
    if data.get("train"):
        rows = f"{data['train_rows']} rows" if isinstance(data.get("train_rows"), int) else "the rows"
        head = HEADS.get(str(spec.get("type")))
        flagged = head.card_unlike(spec) if head is not None else "nothing flags them"
        unlike = (
            "it reads inputs unlike those rows less well, and the function packs using it inherit that"
            if about.get("kind") == "domain"
            else f"predictions for inputs unlike those rows are less reliable; {flagged}"
        )
        lines.append(f"- Trained on {rows} from `{data['train']}`: {unlike}.")
    elif "training" not in about:  # a registry's index entry: the manifest inside the archive says more
        lines.append("- The registry's index does not record its training data: pull it for the full card.")
    else:
        lines.append("- The manifest does not say what it was trained on: check its source before trusting it.")
    kind = HEADS.get(str(spec.get("type")))
    if kind is not None:
        lines += kind.card_limits(spec)
    weak = _weak_signal(about.get("metrics"))
    if weak:
        lines.append(weak)
    method = _method(about)
    if method is not None:
        lines += method.card_limits()
    base = about.get("base_model") if isinstance(about.get("base_model"), dict) else {}
    lines.append(f"- It runs only on the base model {base.get('id', '?')} it was trained with.")
    return lines


def _weak_signal(metrics: Any) -> str:
    if not isinstance(metrics, dict):
        return ""
    for split in ("test", "val"):
        m = metrics.get(split)
        if isinstance(m, dict) and isinstance(m.get("pearson"), (int, float)):
            if m["pearson"] < WEAK_PEARSON:
                return (
                    f"- Its {split} Pearson correlation is only {card_number(m['pearson'])}: its predictions carry "
                    "little signal; treat them as a rough ranking at best."
                )
            return ""
    return ""


def _usage(about: Mapping[str, Any]) -> list[str]:
    name = about.get("name")
    domains = [str(d) for d in about.get("domains") or []]
    if about.get("kind") == "domain":
        return [
            "Function packs trained with this domain load it themselves. To put another function's input "
            f"slot on `{name}` inputs (zero-shot composition):",
            "",
            "```sh",
            f"tagcli predict --domain {name} --function FUNCTION FILE",
            "```",
        ]
    flags = [f"--{d}-col" for d in domains if d in COLUMN_FLAGS]
    named = " and ".join(f"`{d}`" for d in domains) or "input"
    how = "; name other columns with " + " or ".join(f"`{f}`" for f in flags) if flags else ""
    if len(domains) == 1:
        how = "; name another column with `--column`" + (f" or `{flags[0]}`" if flags else "")
    return [
        "```sh",
        f"tagcli predict --function {name} FILE",
        "```",
        "",
        f"FILE is a CSV or Parquet file with {'' if len(domains) > 1 else 'a '}{named} "
        f"column{'s' if len(domains) > 1 else ''}{how}. "
        "It writes FILE.scored.csv (or .parquet): every input column, then "
        f"{_codes(output_columns(about)) or 'the predictions'}, `status` and `error`. "
        f"To measure it on labelled data: `tagcli eval --function {name}{_target_options(about)} FILE`.",
    ]


def _target_options(about: Mapping[str, Any]) -> str:
    training = about.get("training") if isinstance(about.get("training"), dict) else {}
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    targets = data.get("targets") or ["COLUMN"]
    return "".join(f" --target {t}" for t in targets)


# --------------------------------------------------------------------------- formatting


def _dropped(reasons: Any) -> str:
    """ "; 3 dropped (2 missing label, 1 invalid SMILES)" from a split's recorded reasons."""
    if not isinstance(reasons, dict) or not reasons:
        return "; none dropped" if isinstance(reasons, dict) else ""
    counts = {str(k): v for k, v in reasons.items() if isinstance(v, int)}
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"; {sum(counts.values())} dropped ({detail})"


def _rows(n: Any) -> str:
    return f", {n} rows" if isinstance(n, int) else ""


def _cell(value: Any) -> str:
    """Text for a Markdown table cell: a `|` would end the cell."""
    return str(value).replace("|", "\\|")


def _codes(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value else ""
